"""Pure domain code: no I/O, no clock reads, no environment. Time is always a parameter."""
