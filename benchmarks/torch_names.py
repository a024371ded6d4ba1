"""The PyTorch reference classifier of the names benchmark, trained for a wall-clock budget.

The maths of PyTorch's "classifying names" reference the issue names
(`torch_names.py`): `nn.Embedding(V, 32, padding_idx=0)` -> `nn.GRU` / `nn.LSTM` /
`nn.RNN` (optionally bidirectional) over packed sequences -> the last state ->
`nn.Linear`, Adam at 2e-3, batch 64, the global gradient norm clipped to 5. It
reads the split charzoo reads (`training.labelled`, the same seed), so both
sides are scored on the same test strings.

Run as `python -m benchmarks.torch_names DIR CELL HIDDEN SECONDS [--bidirectional]`;
prints one JSON line.
"""

import json
import sys
import time

import numpy as np

from training import labelled


def main(directory, cell, hidden, seconds, bidirectional):
    import torch
    from torch import nn

    torch.manual_seed(0)
    data = labelled.load(directory)
    index = data.index()
    embed = nn.Embedding(len(data.alphabet) + 2, 32, padding_idx=0)
    core = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell](
        32, hidden, batch_first=True, bidirectional=bidirectional)
    head = nn.Linear(hidden * (2 if bidirectional else 1), len(data.classes))
    parameters = [*embed.parameters(), *core.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, 2e-3)

    def logits(texts):
        ids = torch.from_numpy(labelled.encode(texts, index)).long()
        lengths = torch.tensor([max(len(t), 1) for t in texts])
        packed = nn.utils.rnn.pack_padded_sequence(embed(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, h = core(packed)
        h = h[0] if isinstance(h, tuple) else h
        return head(torch.cat([h[-2], h[-1]], -1) if bidirectional else h[-1])

    rng = np.random.default_rng(0)
    texts, labels = data.train.texts, torch.from_numpy(data.train.labels).long()
    started, steps = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        order = rng.permutation(len(texts))
        for start in range(0, len(order), 64):
            chosen = order[start:start + 64]
            loss = nn.functional.cross_entropy(logits([texts[i] for i in chosen]), labels[chosen])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            steps += 1
            if time.monotonic() - started >= seconds:
                break
    with torch.inference_mode():
        predicted = logits(list(data.test.texts)).argmax(-1).numpy()
    return {"test_accuracy": float(np.mean(predicted == data.test.labels)), "steps": steps,
            "seconds": time.monotonic() - started}


if __name__ == "__main__":
    directory, cell, hidden, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(main(directory, cell, hidden, seconds, "--bidirectional" in sys.argv)))
