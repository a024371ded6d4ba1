import numpy as np
import pytest
import tensorflow as tf

from zoo import sampling

BATCH, CLASSES = 8, 12


@pytest.fixture(scope="module")
def logits():
    return tf.constant(np.random.RandomState(0).normal(0, 2, (BATCH, CLASSES)).astype("float32"))


def draw(logits, temperature=1.0, top_k=0, top_p=1.0, seed=7, step=0, index=None):
    index = tf.range(tf.shape(logits)[0]) if index is None else index
    return sampling.sample(logits, temperature, top_k, top_p, seed, index, step).numpy()


def test_greedy_picks_argmax(logits):
    np.testing.assert_array_equal(draw(logits, temperature=0.0), np.argmax(logits, -1))


@pytest.mark.parametrize("settings", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_one_and_tiny_top_p_are_greedy(logits, settings):
    for step in range(20):
        np.testing.assert_array_equal(draw(logits, temperature=2.0, step=step, **settings),
                                      np.argmax(logits, -1))


def test_top_k_two_stays_in_the_two_largest(logits):
    two_largest = np.argsort(-logits.numpy(), -1)[:, :2]
    drawn = np.stack([draw(logits, temperature=5.0, top_k=2, step=s) for s in range(200)], 1)
    for row in range(BATCH):
        assert set(drawn[row]) == set(two_largest[row])  # both, and nothing else


def test_top_p_keeps_the_nucleus():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]]))
    drawn = {int(draw(logits, top_p=0.7, step=s)[0]) for s in range(300)}
    assert drawn == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7


def test_frequencies_follow_softmax_at_temperature_one():
    logits = tf.math.log(tf.constant([[0.6, 0.25, 0.1, 0.05]]))
    rows = 20_000
    drawn = draw(tf.tile(logits, [rows, 1]), seed=3)
    frequencies = np.bincount(drawn, minlength=4) / rows
    np.testing.assert_allclose(frequencies, [0.6, 0.25, 0.1, 0.05], atol=0.015)


def test_low_temperature_sharpens(logits):
    drawn = np.stack([draw(logits, temperature=0.05, step=s) for s in range(50)], 1)
    assert (drawn == np.argmax(logits, -1)[:, None]).mean() > 0.95


def test_same_seed_same_ids_different_seed_differs(logits):
    tiled = tf.tile(logits, [16, 1])
    np.testing.assert_array_equal(draw(tiled, seed=1), draw(tiled, seed=1))
    assert (draw(tiled, seed=1) != draw(tiled, seed=2)).mean() > 0.3
    assert (draw(tiled, seed=1, step=0) != draw(tiled, seed=1, step=1)).mean() > 0.3


def test_a_row_draws_the_same_whatever_batch_it_is_in(logits):
    seeds = tf.constant([5, 6, 7, 8, 9, 10, 11, 12], tf.int64)
    index = tf.constant([0, 1, 2, 0, 1, 2, 3, 4])
    together = sampling.sample(logits, 1.0, 0, 1.0, seeds, index, 3).numpy()
    for row in range(BATCH):
        alone = sampling.sample(logits[row : row + 1], 1.0, 0, 1.0, seeds[row : row + 1],
                                index[row : row + 1], 3).numpy()
        assert alone[0] == together[row]


def test_per_row_settings_and_xla_agree_with_eager(logits):
    temperature = tf.constant([0.0, 1.0, 0.5, 2.0, 1.0, 1.0, 0.0, 3.0])
    top_k = tf.constant([0, 3, 0, 1, 0, 5, 2, 0])
    top_p = tf.constant([1.0, 1.0, 0.5, 1.0, 0.9, 1.0, 1.0, 0.2])
    args = (logits, temperature, top_k, top_p, tf.constant(4, tf.int64), tf.range(BATCH), tf.constant(9))
    eager = sampling.sample(*args).numpy()
    compiled = tf.function(sampling.sample, jit_compile=True)(*args).numpy()
    np.testing.assert_array_equal(eager, compiled)
    assert eager[0] == np.argmax(logits[0]) and eager[3] == np.argmax(logits[3])


# A Markov chain on 3 characters in which greedy decoding is not the most likely:
# after 0, 1 is likelier than 2, but every continuation of 1 is unlikely.
CHAIN = np.log(np.array([[0.0001, 0.55, 0.4499], [1 / 3, 1 / 3, 1 / 3], [0.01, 0.01, 0.98]]))


def chain_step(ids, state):
    return tf.gather(tf.constant(CHAIN, tf.float32), ids), state


def beam(width, length=2, last=(0,)):
    last = tf.constant(last, tf.int32)
    ids, log_probability = sampling.beam_search(chain_step, tf.zeros([len(last), 1]), last,
                                                tf.constant(length), tf.constant(width))
    return ids.numpy(), log_probability.numpy()


def test_beam_search_finds_what_greedy_misses():
    ids, log_probability = beam(width=2)
    np.testing.assert_array_equal(ids[0, 0], [2, 2])  # 0.4499 * 0.98 = 0.44 > 0.55 * 1/3
    np.testing.assert_allclose(log_probability[0, 0], np.log(0.4499 * 0.98), rtol=1e-5)
    greedy, _ = beam(width=1)
    np.testing.assert_array_equal(greedy[0, 0], [1, 0])  # ties break to the lowest id


def test_a_wide_beam_lists_every_continuation_in_order():
    ids, log_probability = beam(width=9, length=2, last=(0, 2))
    for row, first in enumerate((0, 2)):
        exact = sorted(((CHAIN[first, a] + CHAIN[a, b], (a, b)) for a in range(3) for b in range(3)),
                       reverse=True)
        np.testing.assert_allclose(log_probability[row], [p for p, _ in exact], rtol=1e-5)
        assert {tuple(i) for i in ids[row]} == {c for _, c in exact}
