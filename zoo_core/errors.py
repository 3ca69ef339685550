"""User-facing errors: one line that names the problem and the fix, exit status 2."""
import difflib
from typing import Iterable, Optional


class UserError(Exception):
    """A mistake in the user's input. The CLI prints `zoo: <message>` and exits 2."""

    exit_code = 2


class RegistryError(UserError):
    """Conflicting or broken plugins."""


def nearest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The closest valid choice to a mistyped word, or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    best = nearest(word, choices)
    return f"; did you mean '{best}'?" if best else ""
