"""The one error type for user mistakes.

`UserError` is raised for anything a user can fix: a bad name, key, value, shape or file. The CLIs
turn it (and only it) into one line `error: ...` with exit code 2; any other exception is a bug and
keeps its traceback. Messages say what was wrong and what is valid. It subclasses ValueError so
that code which already catches ValueError for bad arguments keeps working.
"""


class UserError(ValueError):
    """A user mistake: one line saying what was wrong and what is valid."""
