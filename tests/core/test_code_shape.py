"""The shape of the code a reader relies on: every public module of
jaxclient declares `__all__` (and the package lists its names), functions
stay short, and the TFF shim uses only jaxclient's declared API."""

import ast
import importlib
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 60
SOURCES = sorted((REPO / 'jaxclient').glob('*.py')) + sorted(
    (REPO / 'interop' / 'jaxclient_tff').rglob('*.py'))
PUBLIC_MODULES = sorted(p.stem for p in (REPO / 'jaxclient').glob('*.py')
                        if not p.stem.startswith('_'))


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
  """Lines of a function without its docstring."""
  body = node.body
  if (body and isinstance(body[0], ast.Expr) and
      isinstance(body[0].value, ast.Constant) and
      isinstance(body[0].value.value, str)):
    body = body[1:] or body
  return node.end_lineno - node.lineno + 1 - (
      (node.body[0].end_lineno - node.body[0].lineno + 1)
      if body is not node.body else 0)


def test_no_function_is_longer_than_60_lines():
  long = []
  for path in SOURCES:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = _body_lines(node)
        if lines > MAX_FUNCTION_LINES:
          long.append(f'{path.relative_to(REPO)}:{node.lineno} {node.name} '
                      f'({lines} lines)')
  assert not long, long


@pytest.mark.parametrize('name', PUBLIC_MODULES)
def test_public_modules_declare_all(name):
  module = importlib.import_module(f'jaxclient.{name}')
  assert isinstance(getattr(module, '__all__', None), list), name
  for public in module.__all__:
    assert hasattr(module, public), f'jaxclient.{name}.{public}'


def test_the_package_exports_every_public_module():
  import jaxclient  # pylint: disable=g-import-not-at-top
  exported = set(jaxclient.__all__)
  missing = [m for m in PUBLIC_MODULES
             if m not in exported and m not in ('cli', '__main__')]
  assert not missing, missing


def _jaxclient_names_used(tree: ast.Module):
  """(module, name) for every `from jaxclient... import name` and every
  `jc.<attr>.<attr>` chain."""
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'jaxclient') and not node.module.startswith('jaxclient_tff'):
      for alias in node.names:
        yield node.module, alias.name
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('jaxclient.'):
          yield alias.name, ''


def test_the_interop_imports_only_declared_jaxclient_names():
  private = []
  for path in sorted((REPO / 'interop' / 'jaxclient_tff').glob('*.py')):
    for module, name in _jaxclient_names_used(ast.parse(path.read_text())):
      parts = module.split('.') + ([name] if name else [])
      if any(part.startswith('_') for part in parts):
        private.append(f'{path.name}: {module}.{name}')
        continue
      if name and module != 'jaxclient':
        declared = importlib.import_module(module).__all__
        if name not in declared:
          private.append(f'{path.name}: {module}.{name} not in __all__')
      elif name:
        import jaxclient  # pylint: disable=g-import-not-at-top
        if name not in jaxclient.__all__:
          private.append(f'{path.name}: jaxclient.{name} not in __all__')
  assert not private, private
