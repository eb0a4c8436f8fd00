"""`python -m jaxclient` and the `jaxclient` console script."""

from __future__ import annotations

import sys

__all__ = ['main']


def main(argv=None) -> int:
  """Runs the `jaxclient` command; returns its exit status."""
  from jaxclient import cli  # pylint: disable=g-import-not-at-top

  return cli.main(argv)


if __name__ == '__main__':
  sys.exit(main())
