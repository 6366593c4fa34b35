"""Ray stages of the ALT lifecycle and the `alt` command line."""
