"""The `calib` command line: runs the service's processes and talks to it over HTTP."""
