"""`segment-loops demo`: its first backfill stops at the account's live
Welcome workflow, and the rerun with --allow_workflows Welcome sends."""
from pipeline import demo


def test_the_demo_shows_the_guard_and_the_option_that_passes_it(capsys):
    assert demo.main(['--users', '4']) == 0
    text = capsys.readouterr().out

    stop = text.index('The backfill stopped: this backfill would set off live Loops workflows')
    allowed = text.index('The demo lets the Welcome workflow run: --allow_workflows Welcome')
    summary = text.index('backfill summary')
    assert stop < allowed < summary
    assert '  Welcome: at most 4 contacts; a contact is created;' in text[stop:allowed]
    assert 'Nothing was sent. To let them run: --allow_workflows Welcome' in text[stop:allowed]
    assert '  Welcome: at most 4 contacts; a contact is created;' in text[summary:]
    assert 'the Welcome workflow took in 4 contacts.' in text
