"""``python -m dsrelu_lightning ...`` runs the command line."""

from dsrelu_lightning.cli import main

if __name__ == "__main__":
    main()
