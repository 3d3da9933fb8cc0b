"""The errors a spec or a user's input ends a stage with: one line naming file, key, value and fix."""


class InputError(ValueError):
    """Bad input from the user (a spec, a data file, experts to merge): the message names the
    file, what is wrong in it and how to fix it. Stages end on it with that one line."""


class SpecError(InputError):
    """A spec that cannot be used: the message names file, key path, value and the fix."""
