"""Make the stand-in's package importable (docker/standin on sys.path) for its unit tests."""
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parents[1]
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))
