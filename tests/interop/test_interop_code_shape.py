"""The shape of jaxclient_tff that readers rely on: every module says what it
holds and declares `__all__`; only `_private_apis` touches other projects'
private names (guarded by `test_private_apis.py`); jaxclient is used through
its public names only; no error is recognized by its text."""

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'interop' / (
    'jaxclient_tff')
# Dotted names under the package, subpackages included ('in_process.context').
MODULES = sorted(
    '.'.join(p.relative_to(PACKAGE).with_suffix('').parts)
    for p in PACKAGE.rglob('*.py') if p.name != '__init__.py') + sorted(
        '.'.join(p.parent.relative_to(PACKAGE).parts) + '.__init__'
        for p in PACKAGE.rglob('*/__init__.py'))
PRIVATE_APIS = '_private_apis'
OWN_NAMES = ('self', 'cls')


def _tree(name: str) -> ast.Module:
  return ast.parse(PACKAGE.joinpath(*name.split('.')).with_suffix('.py')
                   .read_text())


def _is_private(name: str) -> bool:
  return name.startswith('_') and not name.startswith('__')


@pytest.mark.parametrize('name', MODULES + ['__init__'])
def test_every_module_has_a_docstring_and_all(name):
  assert ast.get_docstring(_tree(name)), name
  dotted = 'jaxclient_tff.' + name.removesuffix('__init__')
  module = importlib.import_module(dotted.rstrip('.'))
  assert isinstance(getattr(module, '__all__', None), list), name
  for public in module.__all__:
    assert hasattr(module, public), f'{name}.{public}'


def _private_uses(tree: ast.Module):
  """Other projects' private names: `x._name` (x not self or cls) and
  imports of `_`-prefixed modules or names (jaxclient_tff's own
  `_private_apis` excepted)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and _is_private(node.attr) and not (
        isinstance(node.value, ast.Name) and node.value.id in OWN_NAMES):
      yield f'line {node.lineno}: .{node.attr}'
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      module = getattr(node, 'module', None) or ''
      for alias in node.names:
        parts = (module.split('.') if module else []) + alias.name.split('.')
        if module == 'jaxclient_tff' and alias.name == PRIVATE_APIS:
          continue
        if any(_is_private(p) for p in parts) or module.startswith(
            'tensorflow_federated.python'):
          yield f'line {node.lineno}: import {module} {alias.name}'


@pytest.mark.parametrize('name', MODULES + ['__init__'])
def test_only_private_apis_uses_private_names_of_other_projects(name):
  uses = list(_private_uses(_tree(name)))
  if name == PRIVATE_APIS:
    assert uses, 'expected _private_apis to hold the private uses'
  else:
    assert not uses, (name, uses)


def test_every_private_api_function_documents_its_dependency():
  tree = _tree(PRIVATE_APIS)
  functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
  assert functions
  for function in functions:
    docstring = ast.get_docstring(function) or ''
    assert 'Uses' in docstring and 'Why' in docstring, function.name


def test_no_error_is_recognized_by_its_text():
  matches = []
  for name in MODULES:
    for node in ast.walk(_tree(name)):
      if isinstance(node, ast.Compare) and any(
          isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
              isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and
              c.func.id == 'str' for c in node.comparators):
        matches.append(f'{name}: line {node.lineno}')
  assert not matches, matches
