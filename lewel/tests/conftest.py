"""Make the folder's modules (``import models``) and the repository's ``common`` importable."""
import os
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FOLDER))
if str(FOLDER.parent) not in sys.path:
    sys.path.append(str(FOLDER.parent))  # common, when the repository is not pip-installed
os.environ.setdefault('NO_PROGRESS', '1')
