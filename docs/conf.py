"""Sphinx configuration of jaxclient's documentation site.

Build it (in the core env; `bash scripts/test.sh` does the same with `-W`):

    .venv/bin/sphinx-build -b html docs /tmp/jaxclient-docs

Pages are Markdown (MyST). Two folders of sources are written here at build
time, from the repository, and are git-ignored:

* `docs/api/`: one page per public module of `jaxclient` (autodoc, from the
  docstrings, Google style through napoleon), listed in `API_MODULES`;
* `docs/notebooks/`: `notebooks/*.ipynb` and their README, rendered by
  myst-nb without executing them. A copy whose code equals the repository's
  notebook is kept, so the test command, which executes these copies
  (nbmake `--overwrite`) before it builds the site, gets the outputs into
  the pages; a copy whose code differs is replaced by the repository's.

Nothing is fetched from the network: no intersphinx, a theme (furo) that
ships its assets.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import shutil
import sys
import typing

from sphinx.pycode import ModuleAnalyzer

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
# The checkout's jaxclient, even where another one is installed.
sys.path.insert(0, str(REPO))
# Importing jaxclient must not look for accelerators while building docs.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

project = 'jaxclient'
author = 'the jaxclient authors'
copyright = '2025, the jaxclient authors'  # noqa: A001 (Sphinx's name)
release = '0.1.0'

extensions = [
  'myst_nb',  # Markdown pages (MyST) and notebooks; includes myst_parser.
  'sphinx.ext.autodoc',
  'sphinx.ext.autosummary',
  'sphinx.ext.napoleon',
  'sphinx.ext.viewcode',
]

root_doc = 'index'
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']
html_theme = 'furo'
html_title = 'jaxclient'
html_static_path: list[str] = []

# Docstrings write code as `name` (Markdown's habit): render it as code, a
# link where the name is a documented Python object.
default_role = 'py:obj'

myst_enable_extensions = ['colon_fence', 'deflist']
myst_heading_anchors = 3

# Notebooks are rendered with whatever outputs they hold; never executed here.
nb_execution_mode = 'off'
nb_merge_streams = True

autodoc_member_order = 'bysource'
autodoc_default_options = {
  'members': True,
  'undoc-members': True,
  'show-inheritance': True,
}
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autosummary_generate = False  # docs/api/ is written below, not by autosummary.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections as fields, not as entries that would duplicate the
# NamedTuple / dataclass fields autodoc documents.
napoleon_use_ivar = True
# The fields' types are in the class's signature already.
napoleon_attr_annotations = False

# -- API reference ------------------------------------------------------------

# The public modules, in reading order, and what each holds. The list is the
# API reference's table of contents; the README's Layout section follows it.
API_MODULES = [
  ('jaxclient', 'the curated top-level API'),
  ('jaxclient.typing', 'type aliases: PyTree, Hparams, ClientData'),
  ('jaxclient.models', 'ModelWeights, FunctionalModel, from_flax'),
  ('jaxclient.flax_models', "Mlp and Cnn, the `jaxclient` command's models"),
  ('jaxclient.losses', 'masked losses'),
  (
    'jaxclient.metrics',
    'client metrics (init / update / finalize) and their aggregation',
  ),
  (
    'jaxclient.optimizers',
    "TFF's optimizer rules as composable optax transformations",
  ),
  ('jaxclient.data', 'pack: ragged client data into padded arrays'),
  ('jaxclient.datasets', 'digits, synthetic, a .npz of your own'),
  (
    'jaxclient.client',
    "what one client computes: TFF's semantics as small pure functions",
  ),
  (
    'jaxclient.cohort',
    'how a cohort runs: AllAtOnce, Blocked, '
    'ShardedOverClients, and the default choice (Auto) with its reason',
  ),
  (
    'jaxclient.memory',
    'what a client needs in memory, and the budget a device gives',
  ),
  ('jaxclient.client_work', 'the process: build_model_delta_client_work'),
  ('jaxclient.algorithms', 'federated averaging: build_weighted_fed_avg'),
  ('jaxclient.rounds', 'the host side of a round: chunks and transfers'),
  ('jaxclient.sharding', 'the client axis over devices and hosts'),
  ('jaxclient.checkpoint', 'a pytree as one msgpack file'),
  ('jaxclient.cli', 'the jaxclient command'),
]


def _write_if_changed(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` unless it already holds it (so that Sphinx's
  incremental builds see unchanged sources as unchanged)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def _sentence(text: str) -> str:
  return text[:1].upper() + text[1:]


def _module_page(name: str, summary: str) -> str:
  if importlib.util.find_spec(name) is None:
    raise ImportError(
      f'docs/conf.py: API module {name} does not exist; '
      'remove it from API_MODULES or write it.'
    )
  if name == 'jaxclient':
    return _top_level_page(summary)
  module = importlib.import_module(name)
  public = getattr(module, '__all__', None)
  if public is None:  # No `__all__`: whatever autodoc finds public.
    directives = [f'.. automodule:: {name}']
  else:
    directives = _members_page(name, module, public)
  return f'# `{name}`\n\n```{{eval-rst}}\n' + '\n'.join(directives) + '\n```\n'


def _members_page(name: str, module, public: list[str]) -> list[str]:
  """The module's docstring, a summary table of its `__all__`, then each
  name of `__all__` in source order.

  Each name gets its own directive: autodoc's `:members:` would document
  module-level data (constants, type aliases) only where the source gives it
  a doc comment (`#:`), and the page lists every name of `__all__`.
  """
  analyzer = ModuleAnalyzer.for_module(name)
  analyzer.analyze()
  order = analyzer.tagorder
  lines = [
    f'.. automodule:: {name}',
    '   :no-members:',
    '',
    f'.. currentmodule:: {name}',
    '',
    '.. autosummary::',
    '   :nosignatures:',
    '',
    *(f'   {member}' for member in public),
  ]
  for member in sorted(public, key=lambda m: (order.get(m, len(order)), m)):
    lines += ['', f'.. {_directive_for(getattr(module, member))}:: {member}']
  return lines


def _directive_for(value) -> str:
  if inspect.isclass(value) and issubclass(value, BaseException):
    return 'autoexception'
  if inspect.isclass(value):
    return 'autoclass'
  if inspect.isroutine(value):
    return 'autofunction'
  return 'autodata'


def _top_level_page(summary: str) -> str:
  """The package's docstring and a table of its names, each linked to where
  it is documented (its defining module's page)."""
  package = importlib.import_module('jaxclient')
  rows = []
  for name in package.__all__:
    value = getattr(package, name)
    if isinstance(value, type(package)):
      rows.append(f'| {{doc}}`jaxclient.{name} <{value.__name__}>` | module |')
    else:
      kind = (
        'class'
        if inspect.isclass(value)
        else 'function'
        if callable(value)
        else type(value).__name__
      )
      rows.append(
        f'| {{py:obj}}`jaxclient.{name} <{value.__module__}.{name}>` | {kind} |'
      )
  return (
    f'# `jaxclient`\n\n{_sentence(summary)}: `import jaxclient as jc`'
    '.\n\n```{eval-rst}\n.. automodule:: jaxclient\n   :no-members:\n'
    '```\n\n| name | kind |\n| --- | --- |\n' + '\n'.join(rows) + '\n'
  )


def _check_every_public_module_is_listed() -> None:
  listed = {name for name, _ in API_MODULES}
  public = {
    f'jaxclient.{p.stem}'
    for p in (REPO / 'jaxclient').glob('*.py')
    if not p.stem.startswith('_')
  }
  unlisted = sorted(public - listed)
  if unlisted:
    raise ValueError(
      f'docs/conf.py: public modules missing from API_MODULES: {unlisted}'
    )


def _write_api_pages() -> None:
  _check_every_public_module_is_listed()
  api = DOCS / 'api'
  pages = {
    f'{name}.md': _module_page(name, summary) for name, summary in API_MODULES
  }
  rows = '\n'.join(
    f'| {{doc}}`{name}` | {summary} |' for name, summary in API_MODULES
  )
  pages['index.md'] = (
    '# API reference\n\nGenerated from the docstrings of the core, '
    '`jaxclient`. The TFF shim, `jaxclient_tff`, needs TensorFlow and TFF '
    '(the TFF env), so it is documented in {doc}`../interop`.\n\n'
    '| module | holds |\n| --- | --- |\n' + rows + '\n\n'
    '```{toctree}\n:hidden:\n\n'
    + '\n'.join(name for name, _ in API_MODULES)
    + '\n```\n'
  )
  for stale in api.glob('*.md'):
    if stale.name not in pages:
      stale.unlink()
  for filename, text in pages.items():
    _write_if_changed(api / filename, text)


# -- notebooks -----------------------------------------------------------------


def _code_of(notebook: dict) -> list:
  return [
    (cell['cell_type'], ''.join(cell['source'])) for cell in notebook['cells']
  ]


def _copy_notebooks() -> None:
  """Copies notebooks/*.ipynb to docs/notebooks/, keeping a copy whose
  cells equal the repository's (it may hold outputs from an execution)."""
  target = DOCS / 'notebooks'
  target.mkdir(exist_ok=True)
  sources = sorted((REPO / 'notebooks').glob('*.ipynb'))
  for stale in target.glob('*.ipynb'):
    if not (REPO / 'notebooks' / stale.name).exists():
      stale.unlink()
  for source in sources:
    copy = target / source.name
    if copy.exists():
      try:
        if _code_of(json.loads(copy.read_text())) == _code_of(
          json.loads(source.read_text())
        ):
          continue
      except (ValueError, KeyError):
        pass
    shutil.copyfile(source, copy)
  # The README lists the notebooks; the hidden toctree puts them in the site,
  # in the README's order (any it does not name come last).
  readme = (REPO / 'notebooks' / 'README.md').read_text()

  def position(source: pathlib.Path) -> tuple[int, str]:
    found = readme.find(source.name)
    return (found if found >= 0 else len(readme), source.name)

  sources.sort(key=position)
  _write_if_changed(
    target / 'index.md',
    readme
    + '\n```{toctree}\n:hidden:\n\n'
    + '\n'.join(source.stem for source in sources)
    + '\n```\n',
  )


_write_api_pages()
_copy_notebooks()


# -- docstrings ---------------------------------------------------------------

# jaxclient's docstrings write code in single backticks, as Markdown does.
# Before napoleon reads them, each such span becomes an explicit `py:obj`
# role (what `default_role` makes it anyway), for two reasons: napoleon then
# never splits a `Returns:` or `Args:` line at a colon inside the code, and
# a word glued to the span (`vmap`ped) gets the escaped space that
# reStructuredText needs there. A `<` inside the span is escaped, so that
# `x_<client>` is not read as a link's "title <target>". Doctest lines are
# left alone.
_CODE_SPAN = re.compile(r'(?<![`:\w\\])`([^`\n]+(?:\n[^`\n]+)*?)`(?![`_])')


def _code_span_as_role(match: re.Match) -> str:
  code = match.group(1)
  # A span wrapped over lines is one line of code: a dotted name broken
  # after or before its dot joins up, anything else with a space (so that
  # autosummary never cuts a summary at a dot inside the code).
  code = re.sub(r'(?<=\.)\n\s*|\s*\n\s*(?=\.)', '', code)
  code = re.sub(r'\s*\n\s*', ' ', code)
  code = code.replace('\\', '\\\\').replace('<', '\\<')
  return f':py:obj:`{code}`'


def _markdown_code_spans(app, what, name, obj, options, lines) -> None:
  del app, what, name, obj, options
  out, prose = [], []

  def flush():
    if prose:
      text = _CODE_SPAN.sub(_code_span_as_role, '\n'.join(prose))
      out.extend(
        re.sub(r'(:py:obj:`(?:[^`\\]|\\.)*`)(?=\w)', r'\1\\ ', text).split('\n')
      )
      prose.clear()

  for line in lines:
    if line.lstrip().startswith(('>>>', '...')):
      flush()
      out.append(line)
    else:
      prose.append(line)
  flush()
  lines[:] = out


def _drop_borrowed_docstrings(app, what, name, obj, options, lines) -> None:
  """A constant or type alias without a doc comment shows its value only,
  not the docstring of its type (`Mapping`'s, for `Mapping[str, Array]`)."""
  del app, name, options
  if what != 'data' or not lines:
    return
  for source in (type(obj), typing.get_origin(obj)):
    borrowed = inspect.getdoc(source) if source is not None else None
    if borrowed and lines[0].strip() == borrowed.splitlines()[0].strip():
      lines[:] = []
      return


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields (documented "Alias for field number N") are in the
  class's signature and its Attributes section: no entry of their own."""
  del app, what, name, options
  if (getattr(obj, '__doc__', None) or '').startswith('Alias for field number'):
    return True
  return skip


def setup(app):
  app.connect('autodoc-skip-member', _skip_namedtuple_fields)
  app.connect(
    'autodoc-process-docstring', _drop_borrowed_docstrings, priority=90
  )
  # Before napoleon (priority 500) turns Google sections into fields.
  app.connect('autodoc-process-docstring', _markdown_code_spans, priority=100)
