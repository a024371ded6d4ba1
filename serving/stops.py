"""Where a sample ends because of its stop strings, and streaming that never shows too much.

The rule is the export's own (`training.scoring.first_stop`, in its graph): the
stop string completed first ends the sample, the earliest starting one if
several complete together; the text is cut before it, or after it if asked.
"""


def find_stop(text, stops):
    """`(start, end)` of the stop in `text` that completes first, or None."""
    found = [(text.find(s) + len(s), text.find(s)) for s in stops if s and s in text]
    if not found:
        return None
    end, start = min(found)
    return start, end


def cut(text, stops, include=False):
    """(`text` up to its first stop, whether a stop was found)."""
    found = find_stop(text, stops)
    if found is None:
        return text, False
    return text[: found[1] if include else found[0]], True


class StopStream:
    """Pieces of generated rows in, the part of each row that is final out.

    Without stops every piece passes at once. With stops, the last
    `longest stop - 1` characters of a row are held back until the next piece
    shows whether they begin a stop, so a stream never sends what the whole
    sample would not contain.
    """

    def __init__(self, rows, stops=(), include=False):
        self.stops, self.include = tuple(stops), include
        self.hold = max(map(len, self.stops), default=1) - 1
        self.texts, self.sent, self.done = [""] * rows, [0] * rows, [False] * rows

    def feed(self, pieces):
        """The new final text of each row, given each row's next generated piece."""
        out = []
        for row, piece in enumerate(pieces):
            if self.done[row]:
                out.append("")
                continue
            self.texts[row], self.done[row] = cut(self.texts[row] + piece, self.stops, self.include)
            ready = len(self.texts[row]) if self.done[row] else len(self.texts[row]) - self.hold
            out.append(self.texts[row][self.sent[row] : max(ready, self.sent[row])])
            self.sent[row] += len(out[-1])
        return out

    def finish(self):
        """What is still held back once generation has ended."""
        out = [text[sent:] for text, sent in zip(self.texts, self.sent)]
        self.sent = [len(t) for t in self.texts]
        return out

    @property
    def all_stopped(self):
        return all(self.done)
