"""What the app and the CLI run: the experiment steps, the population export, the paper-style report
and its files, transfer, summaries, and loading any artifact folder. May import: everything below
(io to evaluation)."""
