import pathlib
import sys

# Tests import the flat library modules from the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
