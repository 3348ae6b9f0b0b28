"""cmvtrial: runs the low-dose IL-2 plus ganciclovir trial for CMV viremia end to end."""

__version__ = "0.1.0"
