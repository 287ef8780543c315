# Stand-in Mastodon streaming server: `node ./streaming` becomes `python3 ./streaming`
# (see standin/streaming.py).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from standin import streaming  # noqa: E402

streaming.main()
