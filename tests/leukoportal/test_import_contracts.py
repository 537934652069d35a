"""The import contracts (.importlinter) hold: the apps import only downward, and classifier.ml and
slides.detection import no Django (they replace a test that imported classifier.ml in a bare
interpreter and looked for django in sys.modules). scripts/test.sh also runs lint-imports first."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept():
    proc = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "The apps import only downward" in proc.stdout
    assert "classifier.ml and slides.detection import no Django and no app KEPT" in proc.stdout
    assert "0 broken" in proc.stdout
