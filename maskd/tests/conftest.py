import os
import sys

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if FOLDER not in sys.path:
    sys.path.insert(0, FOLDER)
os.environ.setdefault('NO_PROGRESS', '1')
