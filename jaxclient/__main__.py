"""`python -m jaxclient` and the `jaxclient` console script."""

import sys


def main(argv=None) -> int:
  """Runs the `jaxclient` command; returns its exit status."""
  from jaxclient import cli  # pylint: disable=g-import-not-at-top
  return cli.main(argv)


if __name__ == '__main__':
  sys.exit(main())
