"""``python -m isoplastic``: the command-line interface."""

from isoplastic.cli import main

if __name__ == "__main__":
    main(prog_name="isoplastic")
