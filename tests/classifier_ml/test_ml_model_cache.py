"""A process keeps at most CACHE_SIZE ensembles loaded: a worker that lives through many
retrainings must not keep every model version it ever loaded."""

from classifier.ml import engine
from classifier.ml.api import untrained_checkpoint

from .cells import CLASSES


def test_the_process_keeps_the_most_recently_used_models_only(tmp_path):
    engine.clear_cache()
    paths = [untrained_checkpoint(["efficientnet_lite0"], CLASSES, out_dir=tmp_path / str(i), weights=None, seed=i,
                                  config_overrides={"input_size": 64})[0] for i in range(3)]
    first = engine.load_ensemble(paths[0], device="cpu", runtime="torch")
    assert engine.load_ensemble(paths[0], device="cpu", runtime="torch") is first  # cached
    second = engine.load_ensemble(paths[1], device="cpu", runtime="torch")
    assert engine.load_ensemble(paths[0], device="cpu", runtime="torch") is first  # now the most recent
    engine.load_ensemble(paths[2], device="cpu", runtime="torch")
    assert len(engine._CACHE) == engine.CACHE_SIZE == 2
    # the least recently used one (the second) was let go; the first stays
    assert engine.load_ensemble(paths[0], device="cpu", runtime="torch") is first
    assert engine.load_ensemble(paths[1], device="cpu", runtime="torch") is not second
    engine.clear_cache()
