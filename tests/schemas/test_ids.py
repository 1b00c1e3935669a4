from schemas import ids


def test_same_definition_same_id_and_order_free():
    a = ids.content_id("x", a=1, b=[1, 2], c={"y": 0.15, "z": "s"})
    b = ids.content_id("x", c={"z": "s", "y": 0.15}, b=[1, 2], a=1)
    assert a == b and len(a) == ids.ID_HEX_DIGITS


def test_float_noise_does_not_change_ids():
    r = 0.2 - 0.05  # 0.15000000000000002
    assert r != 0.15
    assert ids.content_id("x", r=r) == ids.content_id("x", r=0.15)
    assert ids.content_id("x", r=1.0) == ids.content_id("x", r=1)


def test_any_field_changes_the_id():
    base = dict(iteration_id="i", question_id="q", source="teacher", model_id="m",
                mask_ratio=0.2, sample_index=0, seed=1,
                sampling={"temperature": 1.0, "top_p": 0.9})
    ref = ids.response_id(**base)
    for key, value in [("source", "student"), ("sample_index", 1), ("mask_ratio", 0.15),
                       ("seed", 2), ("sampling", {"temperature": 0.7, "top_p": 0.9})]:
        assert ids.response_id(**{**base, key: value}) != ref, key
    assert ids.content_id("a", v=1) != ids.content_id("b", v=1)


def test_bytes_id_is_sha256_prefix():
    import hashlib

    assert ids.bytes_id(b"abc") == hashlib.sha256(b"abc").hexdigest()[:32]


def test_non_finite_floats_are_refused():
    import pytest

    with pytest.raises(ValueError, match="non-finite"):
        ids.content_id("x", v=float("nan"))


def test_checkpoint_id_follows_the_weights(tmp_path):
    import pytest

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
        (d / "config.json").write_text("{}")
    (b / "config.json").write_text('{"other": 1}')  # not weights: same model
    (b / "training_args.bin").write_bytes(b"paths and times")  # the trainer's side file: same model
    assert ids.checkpoint_id(a) == ids.checkpoint_id(b)
    (b / "model.safetensors").write_bytes(b"weightz")
    assert ids.checkpoint_id(a) != ids.checkpoint_id(b)
    with pytest.raises(FileNotFoundError, match="no weight files"):
        ids.checkpoint_id(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / "pytorch_model.bin").write_bytes(b"w")
    (old / "training_args.bin").write_bytes(b"x")
    first = ids.checkpoint_id(old)
    (old / "training_args.bin").write_bytes(b"y")
    assert ids.checkpoint_id(old) == first  # .bin weights count, training_args.bin does not
