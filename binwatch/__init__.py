"""binwatch: count the objects in robot-carried bins and flag inventory mismatches.

This package is the composition root: the one Settings object and the `binwatch` command line.
The ML core lives in `model`, persistence in `records`, the HTTP service in `api`, training workers in
`worker`.
"""

__version__ = "0.1.0"
