import numpy as np

from phr_cli.encoders.text import TextEncoder, fit_projection


def test_bundled_minilm_embeds_offline_with_meaningful_similarity():
    encoder = TextEncoder("cpu")
    vectors = encoder.embed(["a dog runs on the beach", "a puppy plays at the seaside",
                             "quarterly stock market report"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert len(encoder.weights_id) == 64  # SHA-256 of the bundled model.safetensors
    assert encoder.embed([]).shape == (0, 384)


def test_projection_is_100_wide_centred_and_padded_when_captions_are_few():
    rng = np.random.default_rng(0)
    many = rng.normal(size=(300, 384)).astype(np.float32)
    projection = fit_projection(many)
    assert projection.components.shape == (100, 384)
    projected = projection.apply(many)
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-4)
    assert np.all(np.diff(projected.var(axis=0)) <= 1e-4)  # components by decreasing variance
    few = fit_projection(many[:5])
    assert few.components.shape == (100, 384) and not np.any(few.components[4:])
    assert fit_projection(many[:0]).components.shape == (100, 384)
