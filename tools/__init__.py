"""The command-line tools. Each runs as `python tools/X.py` and as `detres <verb>` (detres/commands.py); in the wheel
this folder is the package `detres_tools`."""
