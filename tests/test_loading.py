"""Both models build on worker threads; waiting for them gives the models or the loading error."""

import pytest

from handler.loading import builder_threads, start_loading
from handler.onnx_model import CrossEncoder, Encoder
from handler.settings import Settings


def test_both_models_load_in_the_background_with_their_timings(artifacts):
    models = start_loading(Settings(artifacts_dir=artifacts)).result()
    assert isinstance(models.encoder, Encoder) and isinstance(models.cross, CrossEncoder)
    assert set(models.load_ms) == {"bi_ms", "cross_ms"} and min(models.load_ms.values()) > 0


def test_rerank_max_length_setting_reaches_the_cross_encoder(artifacts):
    models = start_loading(Settings(artifacts_dir=artifacts, rerank_max_length=40)).result()
    assert models.cross.max_length == 40 and models.encoder.max_length == models.encoder.manifest.max_length


def test_a_model_that_fails_to_load_raises_when_waited_for(tmp_path):
    pending = start_loading(Settings(artifacts_dir=tmp_path))  # no models here
    with pytest.raises(FileNotFoundError):
        pending.result()


def test_sessions_do_not_spin_idle_threads(artifacts):
    """Spinning intra-op threads would take the 2 vCPUs the rest of the init needs."""
    session = Encoder(artifacts / "models" / "bi").session
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 1), (3, 2), (16, 2)])
def test_model_builders_leave_the_calling_thread_a_core(cpus, workers):
    """On 2 vCPUs two builders and the main thread (the cold start's critical path) share 2 cores."""
    assert builder_threads(cpus) == workers
