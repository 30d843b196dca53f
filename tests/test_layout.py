"""The layout of transforms/: a package per stage, imports running one way.

Each stage package says in its docstring which packages it may import
("May import: transforms.core, ..."); this test holds every module to it, so
an import that runs back up the pipeline (a piece in the wrong room) fails here
rather than in review.
"""
import ast
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSFORMS = os.path.join(REPO, 'transforms')
STAGES = ('core', 'segment', 'mapping', 'contacts', 'loops', 'delivery', 'state')
MAX_MODULES = 12


def allowed_imports(stage: str) -> set:
    """The packages a stage's docstring lets it import, itself included."""
    with open(os.path.join(TRANSFORMS, stage, '__init__.py'), encoding='utf-8') as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ''
    match = re.search(r'May import: (.*?)\.\s*$', doc, re.S)
    assert match, f'transforms/{stage}/__init__.py must say what it may import'
    named = set(re.findall(r'transforms\.([a-z_]+)', match.group(1)))
    return named | {stage}


def modules(stage: str) -> list:
    """A stage's own modules (a subpackage is one room of its own)."""
    folder = os.path.join(TRANSFORMS, stage)
    return sorted(name for name in os.listdir(folder)
                  if name.endswith('.py') and name != '__init__.py')


def imported_modules(path: str) -> set:
    """Every module a file imports, at the top or inside functions."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f'{node.module}.{alias.name}' for alias in node.names)
    return found


def files_of(stage: str) -> list:
    """Every Python file of a stage, its subpackages' included, relative to it."""
    folder = os.path.join(TRANSFORMS, stage)
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names if name.endswith('.py'))


def wrong_way(stage: str) -> list:
    allowed = allowed_imports(stage)
    found = []
    for name in files_of(stage):
        for module in sorted(imported_modules(os.path.join(TRANSFORMS, stage, name))):
            top, _, rest = module.partition('.')
            if top in ('pipeline', 'tests', 'bench'):
                found.append(f'{stage}/{name} imports {module}')
            elif top == 'transforms' and rest:
                target = rest.split('.')[0]
                if target in STAGES and target not in allowed:
                    found.append(f'{stage}/{name} imports {module}')
    return found


def test_transforms_holds_only_the_stage_packages():
    entries = {name for name in os.listdir(TRANSFORMS) if not name.startswith(('.', '__'))}
    assert entries == set(STAGES)


def test_each_stage_may_import_only_the_stages_before_it():
    for position, stage in enumerate(STAGES):
        assert allowed_imports(stage) <= set(STAGES[:position + 1]), stage


@pytest.mark.parametrize('stage', STAGES)
def test_imports_run_one_way(stage):
    assert wrong_way(stage) == []


@pytest.mark.parametrize('stage', STAGES)
def test_a_stage_is_a_room_a_reader_can_hold(stage):
    assert 0 < len(modules(stage)) <= MAX_MODULES, modules(stage)


def test_the_check_finds_an_import_that_runs_back_up(tmp_path, monkeypatch):
    fake = tmp_path / 'transforms'
    for stage in STAGES:
        (fake / stage).mkdir(parents=True)
        with open(os.path.join(TRANSFORMS, stage, '__init__.py'), encoding='utf-8') as f:
            (fake / stage / '__init__.py').write_text(f.read())
    (fake / 'mapping' / 'bad.py').write_text('from transforms.loops.client import LoopsClient\n')
    (fake / 'core' / 'worse.py').write_text('def f():\n    import pipeline.cli\n')
    (fake / 'segment' / 'sub').mkdir()
    (fake / 'segment' / 'sub' / 'deep.py').write_text('from transforms.state import files\n')
    monkeypatch.setattr(sys.modules[__name__], 'TRANSFORMS', str(fake))
    assert wrong_way('mapping') == ['mapping/bad.py imports transforms.loops.client',
                                    'mapping/bad.py imports transforms.loops.client.LoopsClient']
    assert wrong_way('core') == ['core/worse.py imports pipeline.cli']
    assert wrong_way('segment') == ['segment/sub/deep.py imports transforms.state',
                                    'segment/sub/deep.py imports transforms.state.files']
