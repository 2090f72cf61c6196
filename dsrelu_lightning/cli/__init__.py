"""The command line: the LightningCLI subclass, help, one-line errors, evaluation and export."""

PROG = "python -m dsrelu_lightning"
"""How the commands are invoked, as their usage lines and messages show it."""
