"""python -m engine.models [--write docs/models.md]: the model table, from the registry."""
import argparse
from pathlib import Path

from engine.models.registry import model_table, with_model_table

parser = argparse.ArgumentParser(prog="python -m engine.models", description=__doc__)
parser.add_argument("--write", type=Path, metavar="PATH", help="replace the table between the markers in PATH")
args = parser.parse_args()
if args.write:
    args.write.write_text(with_model_table(args.write.read_text()))
else:
    print(model_table(), end="")
