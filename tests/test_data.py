import http.server
import io
import threading
import zipfile

import numpy as np
import pytest

from training import data
from training.batches import Windows, evaluation_windows


def test_normalize_text8_spells_digits_and_folds_everything_else():
    assert data.normalize_text8("In 1984, Orwell's   BOOK!\n") == "in one nine eight four orwell s book"
    assert data.normalize_text8("Ça, ÉTÉ 7") == "a t seven"  # non-ASCII letters are not text8's


def test_the_graph_mapping_of_primes_keeps_their_spaces():
    mapped = data.normalize_text8_tensor(["Hi, 2 U!", " the  ", ""]).numpy().tolist()
    assert mapped == [b"hi two u ", b" the ", b""]


def test_builtin_corpus_is_text8_alphabet_and_split_90_5_5():
    corpus = data.load("builtin")
    assert corpus.alphabet == data.TEXT8_ALPHABET and corpus.normalize == "text8"
    total = len(corpus.train) + len(corpus.valid) + len(corpus.test)
    assert total > 300_000
    assert len(corpus.train) == int(total * 0.9) and len(corpus.valid) == int(total * 0.05)
    assert corpus.train.dtype == np.uint8 and corpus.train.max() < 27
    assert corpus.decode(corpus.train[:4]).strip()


def test_text_file_alphabet_comes_from_the_training_split(tmp_path):
    text = "abcab" * 180 + "xyz" * 20  # 'x', 'y', 'z' appear only in valid/test
    (tmp_path / "t.txt").write_text(text)
    corpus = data.load(str(tmp_path / "t.txt"))
    assert corpus.alphabet == "abc" and corpus.normalize is None
    assert corpus.dropped == 60 and len(corpus.valid) + len(corpus.test) == len(text) - 60 - len(corpus.train)
    normalized = data.load(str(tmp_path / "t.txt"), normalize="text8")
    assert normalized.alphabet == data.TEXT8_ALPHABET


@pytest.mark.parametrize("spec, message", [("no/such/file.txt", "no corpus at"),])
def test_missing_corpus_is_a_clear_error(spec, message):
    with pytest.raises(data.DataError, match=message):
        data.load(spec)


def fake_text8(characters=10_000):
    text = ("anarchism originated as a term of abuse " * characters)[:characters]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("text8", text)
    return buffer.getvalue()


@pytest.fixture
def http_server():
    """Serves `files` (path -> bytes) on 127.0.0.1; yields (base url, files)."""
    files = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()


def test_text8_download_verifies_and_caches(tmp_path, http_server):
    url, files = http_server
    files["/text8.zip"] = body = fake_text8()
    codes = data.text8_codes(tmp_path, url + "/text8.zip", len(body), 10_000)
    assert len(codes) == 10_000 and (tmp_path / "text8.zip").read_bytes() == body
    files.clear()  # a second load reads the cache, not the network
    assert len(data.text8_codes(tmp_path, url + "/text8.zip", len(body), 10_000)) == 10_000


@pytest.mark.parametrize("damage, message", [
    (lambda body: body[: len(body) // 2], "bytes, expected"),       # truncated download
    (lambda body: body + b"x", "bytes, expected"),                   # wrong size
])
def test_bad_text8_download_leaves_nothing_behind(tmp_path, http_server, damage, message):
    url, files = http_server
    good = fake_text8()
    files["/text8.zip"] = damage(good)
    with pytest.raises(data.DataError, match=message):
        data.text8_codes(tmp_path, url + "/text8.zip", len(good), 10_000)
    assert list(tmp_path.iterdir()) == []


def test_right_size_but_wrong_content_is_rejected(tmp_path, http_server):
    url, files = http_server
    files["/text8.zip"] = body = fake_text8(9_000)
    with pytest.raises(data.DataError, match="expected 10,000"):
        data.text8_codes(tmp_path, url + "/text8.zip", len(body), 10_000)
    assert not (tmp_path / "text8.zip").exists()


def test_tiny_shakespeare_download_is_checked_against_its_digest(tmp_path, http_server):
    import hashlib

    url, files = http_server
    body = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40
    digest = hashlib.sha256(body.encode()).hexdigest()
    files["/input.txt"] = body.encode()[:-1] + b"?"  # one byte changed
    with pytest.raises(data.DataError, match="SHA-256"):
        data.tiny_shakespeare_text(tmp_path, url + "/input.txt", digest)
    assert list(tmp_path.iterdir()) == []
    files["/input.txt"] = body.encode()
    assert data.tiny_shakespeare_text(tmp_path, url + "/input.txt", digest) == body
    files.clear()  # cached
    assert data.tiny_shakespeare_text(tmp_path, url + "/input.txt", digest) == body


def test_offline_and_uncached_fails_at_once_saying_what_to_do(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.text8_codes(tmp_path, "http://127.0.0.1:9/text8.zip")
    message = str(error.value)
    assert str(tmp_path / "text8.zip") in message and "--data builtin" in message
    assert "CHARZOO_DATA" in message


def test_windows_are_streams_shifted_by_one_and_carry_on():
    ids = np.arange(41, dtype=np.uint8)  # 4 streams of 10, windows of 3
    windows = Windows(ids, batch_size=4, unrollings=3)
    assert len(windows) == 3
    inputs, targets = windows[0]
    np.testing.assert_array_equal(inputs[:, 0], [0, 10, 20, 30])  # each row its own stream
    np.testing.assert_array_equal(targets, inputs + 1)
    following, _ = windows[1]
    np.testing.assert_array_equal(following[:, 0], inputs[:, -1] + 1)  # next window continues
    assert inputs.dtype == np.int32
    with pytest.raises(IndexError):
        windows[3]
    with pytest.raises(ValueError, match="smaller --batch-size"):
        Windows(ids, batch_size=20, unrollings=3)


def test_a_span_stacks_consecutive_windows():
    windows = Windows(np.arange(100, dtype=np.uint8), batch_size=3, unrollings=4)
    inputs, targets = windows.span(2, 3)
    assert inputs.shape == targets.shape == (3, 3, 4) and inputs.dtype == np.int32
    for k in range(3):
        np.testing.assert_array_equal(inputs[k], windows[2 + k][0])
        np.testing.assert_array_equal(targets[k], windows[2 + k][1])
    with pytest.raises(IndexError):
        windows.span(len(windows) - 2, 3)


def test_evaluation_windows_score_every_character_once():
    ids = np.arange(103, dtype=np.uint8)
    pairs = list(evaluation_windows(ids, streams=5, window=7))
    targets = np.concatenate([t for _, t in pairs], axis=1)
    assert targets.size == 5 * (102 // 5)
    np.testing.assert_array_equal(np.sort(targets.ravel()), np.arange(1, 101))
    assert pairs[-1][0].shape[1] == 20 % 7
