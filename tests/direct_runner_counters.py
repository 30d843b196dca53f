"""Beam counters that can be asserted on, in tests on Beam's legacy DirectRunner.

The legacy DirectRunner (the one that runs TestStream and Pub/Sub pipelines
locally) gives each bundle a metrics container of its own, but it enters the
bundle through `StateSampler.scoped_state`, which caches the scoped state by
step name per worker thread, container included: every later bundle of a
step on that thread counts into the first bundle's container, which was
committed long before, and its counts are lost (Beam 2.77; a step's first
bundle alone counts). `count_every_bundle(monkeypatch)` makes
scoped_state hand out a state with the bundle's own container, for the rest
of the test, so that it sees every count. Test-only: it changes nothing the
jobs ship.
"""
from apache_beam.runners.worker import statesampler


def _scoped_state_with_the_bundles_container(original):
    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is not None and state.metrics_container is not metrics_container:
            for key, cached in list(self._states_by_name.items()):
                if cached is state:
                    del self._states_by_name[key]
            state = original(self, name_context, state_name, io_target, metrics_container)
        return state
    return scoped_state


def count_every_bundle(monkeypatch) -> None:
    """Every bundle's counts reach the pipeline result from now until the
    end of the test (see the module docstring)."""
    monkeypatch.setattr(statesampler.StateSampler, 'scoped_state',
                        _scoped_state_with_the_bundles_container(
                            statesampler.StateSampler.scoped_state))

