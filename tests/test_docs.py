"""The documentation holds together: README.md and docs/*.md.

Every relative Markdown link names a file of the repository, every `#anchor`
names a heading of its target file (by GitHub's slug rules), every
repository path the pages name in code exists, every docs page is linked
from the README, and the README stays a front door: short, with its Quick
start.
"""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 320
# Top-level folders whose files the pages name in `code`.
SOURCE_FOLDERS = ('pipeline', 'transforms', 'tests', 'bench', 'schemas', 'docs')

_FENCE = re.compile(r'^\s*(```|~~~)')
_HEADING = re.compile(r'^#{1,6}\s+(.*?)\s*#*\s*$')
_CODE_SPAN = re.compile(r'`[^`\n]*`')
_INLINE_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
_REFERENCE_DEFINITION = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
_LINK_IN_HEADING = re.compile(r'\[([^\]]*)\]\([^)]*\)')
_NOT_IN_SLUG = re.compile(r'[^\w\- ]')
_EXTERNAL = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)
_SOURCE_PATH = re.compile(r'^(?:%s)/[\w./*-]*\w$' % '|'.join(SOURCE_FOLDERS))


def github_slug(heading: str) -> str:
    """A heading's text -> its anchor as GitHub makes it: links keep their
    text, letters lower case, punctuation other than '-' and '_' removed
    (backticks included), each space a '-'."""
    text = _LINK_IN_HEADING.sub(r'\1', heading.strip()).lower()
    return _NOT_IN_SLUG.sub('', text).replace(' ', '-')


def prose_lines(text: str):
    """(line number, line) of every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.split('\n'), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(text: str) -> set:
    """The anchors of a Markdown text's headings; a repeated slug gets -1,
    -2, ... as on GitHub."""
    seen: dict = {}
    result = set()
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f'{slug}-{count}')
    return result


def links(text: str) -> list:
    """(line number, target) of every Markdown link, outside code."""
    found = []
    for number, line in prose_lines(text):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1)))
            continue
        without_code = _CODE_SPAN.sub(lambda m: '_' * len(m.group(0)), line)
        found.extend((number, m.group(1)) for m in _INLINE_LINK.finditer(without_code))
    return found


def _read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def broken_links(path: str, repo: str) -> list:
    """What is wrong with the links of the Markdown file at `path`, as
    'file:line: target: why' texts; [] when every link resolves."""
    problems = []
    folder = os.path.dirname(path)
    where = os.path.relpath(path, repo)
    for number, target in links(_read(path)):
        if _EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition('#')
        target_path = os.path.normpath(os.path.join(folder, file_part)) if file_part else path
        if os.path.relpath(target_path, repo).startswith('..'):
            problems.append(f'{where}:{number}: {target}: outside the repository')
        elif not os.path.exists(target_path):
            problems.append(f'{where}:{number}: {target}: no such file')
        elif fragment:
            if not target_path.endswith('.md') or os.path.isdir(target_path):
                problems.append(f'{where}:{number}: {target}: an anchor into a non-Markdown file')
            elif fragment not in anchors(_read(target_path)):
                problems.append(f'{where}:{number}: {target}: no heading with this anchor')
    return problems


def missing_source_paths(path: str, repo: str) -> list:
    """Repository paths named in `code` in the file at `path` (say
    `transforms/loops/retry.py`) that match no file of the repository."""
    problems = []
    for number, line in prose_lines(_read(path)):
        for span in _CODE_SPAN.findall(line):
            name = span.strip('`')
            if _SOURCE_PATH.match(name) and not glob.glob(os.path.join(repo, name)):
                problems.append(f'{os.path.relpath(path, repo)}:{number}: {name}')
    return problems


def pages(repo: str = REPO) -> list:
    return [os.path.join(repo, 'README.md')] + sorted(glob.glob(os.path.join(repo, 'docs', '*.md')))


def section(text: str, heading: str) -> str:
    """The lines under `## heading`, code blocks included, up to the next
    heading of level 1 or 2."""
    lines, inside, fenced = [], False, False
    for line in text.split('\n'):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r'^#{1,2}\s', line):
            inside = line.strip('# ').strip() == heading
            continue
        if inside:
            lines.append(line)
    return '\n'.join(lines)


# The checks, on this repository.

def test_every_link_resolves():
    problems = [problem for page in pages() for problem in broken_links(page, REPO)]
    assert problems == []


def test_the_pages_link_to_each_other():
    """The pages are checked at all: the README links to docs pages and their
    anchors, and every docs page links back to the README."""
    readme_targets = [target for _, target in links(_read(pages()[0]))]
    assert len(readme_targets) > 20
    assert any(target.startswith('docs/') and '#' in target for target in readme_targets)
    for page in pages()[1:]:
        assert any(target.startswith('../README.md') for _, target in links(_read(page))), page


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.partition('#')[0] for _, target in links(_read(pages()[0]))}
    unlinked = [os.path.relpath(page, REPO) for page in pages()[1:]
                if os.path.relpath(page, REPO) not in linked]
    assert unlinked == []


def test_repository_paths_named_in_the_docs_exist():
    problems = [problem for page in pages() for problem in missing_source_paths(page, REPO)]
    assert problems == []


def test_the_readme_is_a_front_door():
    text = _read(pages()[0])
    assert len(text.splitlines()) < README_MAX_LINES
    quick_start = section(text, 'Quick start')
    assert 'make demo' in quick_start
    assert 'make test' in quick_start


def test_where_things_are_is_findable_from_the_architecture_page():
    text = _read(os.path.join(REPO, 'docs', 'architecture.md'))
    targets = {target for _, target in links(text)}
    assert '../transforms/loops/retry.py' in targets      # Loops' answers classified
    assert '../transforms/segment/parse.py' in targets    # a Segment line -> ParsedEvent
    assert 'ParsedEvent' in text and 'classif' in text


# The checker itself: it must be able to fail.

@pytest.mark.parametrize('heading, slug', [
    ('Quick start', 'quick-start'),
    ('`backfill`', 'backfill'),
    ('Workers, `--write_shards` and `--rate_limit`', 'workers---write_shards-and---rate_limit'),
    ('Replaying delivery failures: `segment-loops replay`',
     'replaying-delivery-failures-segment-loops-replay'),
    ('What each failure means, and what to do', 'what-each-failure-means-and-what-to-do'),
    ('Flex Templates: build once', 'flex-templates-build-once'),
    ('`transforms/`: a package per stage', 'transforms-a-package-per-stage'),
    ('See [Mapping](mapping.md) first', 'see-mapping-first'),
    ('  Trailing spaces  ', 'trailing-spaces'),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_anchors_skip_code_and_number_repeats():
    text = '# Title\n\n## Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n### `x`: y\n'
    assert anchors(text) == {'title', 'notes', 'notes-1', 'x-y'}


def test_links_outside_code_only():
    text = ('See [a](a.md#one) and `[b](b.md)`.\n\n```\n[c](c.md)\n```\n'
            '[`d`](#d) ![e](e.png)\n[ref]: docs/f.md\n')
    assert links(text) == [(1, 'a.md#one'), (6, '#d'), (6, 'e.png'), (7, 'docs/f.md')]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding='utf-8')


def test_broken_links_are_found(tmp_path):
    _write(tmp_path / 'src' / 'code.py', '')
    _write(tmp_path / 'docs' / 'guide.md', '# Guide\n\n## Running it\n\n```\n## Not here\n```\n'
                                           '[back](../README.md#start)\n')
    _write(tmp_path / 'README.md', '\n'.join([
        '# Tool', '## Start',
        '[ok](docs/guide.md#running-it)', '[ok](#start)', '[ok](src/code.py)',
        '[ok](https://example.com/x#y)', '[ok](docs/)',
        '[gone](docs/missing.md)', '[bad anchor](docs/guide.md#not-here)',
        '[bad local](#finish)', '[anchor in code](src/code.py#L1)', '[out](../elsewhere.md)',
    ]) + '\n')
    assert broken_links(str(tmp_path / 'README.md'), str(tmp_path)) == [
        'README.md:8: docs/missing.md: no such file',
        'README.md:9: docs/guide.md#not-here: no heading with this anchor',
        'README.md:10: #finish: no heading with this anchor',
        'README.md:11: src/code.py#L1: an anchor into a non-Markdown file',
        'README.md:12: ../elsewhere.md: outside the repository',
    ]
    assert broken_links(str(tmp_path / 'docs' / 'guide.md'), str(tmp_path)) == []


def test_missing_source_paths_are_found(tmp_path):
    _write(tmp_path / 'transforms' / 'loops' / 'retry.py', '')
    _write(tmp_path / 'page.md', 'See `transforms/loops/retry.py`, `transforms/retry.py`,\n'
                                 '`transforms/*/retry.py` and `dead-letter/failures-*.avro`.\n')
    assert missing_source_paths(str(tmp_path / 'page.md'), str(tmp_path)) == [
        'page.md:1: transforms/retry.py']


def test_section_ends_at_the_next_heading_not_in_code():
    text = ('# Tool\n\n## Quick start\n\n```sh\n## a comment\nmake demo\n```\n\n'
            '## Testing\n\nmake test\n')
    assert 'make demo' in section(text, 'Quick start')
    assert 'make test' not in section(text, 'Quick start')
