"""The command line as an operator uses it: fab -l, --help, --dry, role errors, planned tasks."""
import subprocess

from .conftest import fab

PLANNED = ["preflight", "tunnel", "basebackup", "replication-status", "copy-config", "precompile",
           "feeds-build", "render-nginx-proxy", "drain", "promote", "restart", "dns", "status", "runbook",
           "cleanup", "phase1-replicate", "phase2-proxy", "phase3-failover", "phase4-dns"]


def test_every_planned_task_is_listed_with_a_docstring():
    listing = fab("-l").stdout
    lines = {line.split()[0]: line for line in listing.splitlines()[2:]
             if line.startswith("  ") and line.split() and not line.startswith("    ")}
    for name in PLANNED:
        assert name in lines, name
        assert len(lines[name].split()) > 1, f"{name} has no docstring"


def test_help_documents_flags():
    out = fab("--help", "render-nginx-proxy").stdout
    assert "--undo" in out and "--check" in out


def test_dry_preflight_prints_ssh_lines_and_connects_to_nothing():
    # Aliases that resolve nowhere: a dry run must not even try.
    result = fab("--dry", "-H", "old,new", "preflight")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "# check: ssh old -- 'sudo -n true'" in lines
    assert "# check: ssh new -- \"df -PB1 '<its parent>'\"" in lines
    subprocess.run(["bash", "-n"], input=commented_checks(lines), text=True, check=True)


def commented_checks(lines):
    """The shell text of `# check:` lines, with their here-documents."""
    script, delimiter = [], None
    for line in lines:
        if line.startswith("# check: "):
            script.append(line[len("# check: "):])
            delimiter = line.split("<<'")[1].rstrip("'") if "<<'" in line else None
        elif delimiter and line.startswith("# "):
            script.append(line[2:])
            delimiter = None if line[2:] == delimiter else delimiter
    assert script
    return "\n".join(script) + "\n"


def test_phase_with_one_host_fails_naming_the_missing_role():
    result = fab("-H", "new", "preflight")
    assert result.returncode != 0
    assert "missing role old" in result.stderr
    # the same without any settings file
    result = fab("-H", "new", "preflight", env_file="env/does-not-exist.env")
    assert result.returncode != 0 and "missing role old" in result.stderr


def test_unknown_host_is_named():
    result = fab("--dry", "-H", "old,elsewhere", "preflight")
    assert result.returncode == 2
    assert "elsewhere is not OLD_SSH or NEW_SSH" in result.stderr


def test_one_host_task_refuses_the_wrong_role():
    result = fab("--dry", "-H", "old", "feeds-build")
    assert result.returncode == 2 and "feeds-build runs on new (new)" in result.stderr


def test_bad_settings_fail_before_any_host_is_touched(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("DOMAIN=not a domain\nPG_PORT=0\n")
    result = fab("-H", "old,new", "preflight", env_file=bad)
    assert result.returncode == 2
    assert "DOMAIN: 'not a domain' is not valid" in result.stderr
    assert "PG_PORT: '0' is not valid" in result.stderr
    assert "OLD_SSH: missing" in result.stderr
