import json

import numpy as np
import pytest

from vtm.pipeline.annotations import AnnotationError, load_annotations


def _write(tmp_path, lines):
    path = tmp_path / "a.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_valid_file_loads_events_labels_and_empty_videos(extracted, tmp_path):
    _, cache = extracted
    path = _write(
        tmp_path,
        [
            {
                "video": "cámara 1/entrada.mp4",
                "start": 1.8,
                "end": 2.5,
                "label": "person",
                "description": "someone walks in",
            },
            "# a comment",
            "",
            {"video": "cámara 1/entrada.mp4", "start": 6.0, "end": 6.0},
            {"video": "quiet/empty room.avi"},
        ],
    )
    ann = load_annotations(path, cache)
    assert ann.labels == ("event", "person")
    assert sorted(len(e) for e in ann.events.values()) == [0, 2]
    vid = next(v for v, p in ann.paths.items() if p == "cámara 1/entrada.mp4")
    labels = ann.frame_labels(vid, np.arange(30) / 3.0, 1 / 3.0)
    assert labels[18] == 1 and labels[6] == 2 and labels[0] == 0  # 6.0 s: a moment still labels its frame


@pytest.mark.parametrize(
    "line, message",
    [
        ({"video": "nope.mp4", "start": 1, "end": 2}, "unknown video"),
        ({"video": "broken/notes.mp4", "start": 1, "end": 2}, "failed in extract"),
        ({"video": "quiet/empty room.avi", "start": 3, "end": 2}, "before start"),
        ({"video": "quiet/empty room.avi", "start": 99, "end": 100}, "past the end"),
        ({"video": "quiet/empty room.avi", "start": 1}, "both be numbers"),
        ({"video": "quiet/empty room.avi", "begin": 1}, "unknown field"),
        ("{not json", "not valid JSON"),
    ],
)
def test_mistakes_name_the_line_and_the_problem(extracted, tmp_path, line, message):
    _, cache = extracted
    path = _write(tmp_path, [{"video": "quiet/empty room.avi"}, line])
    with pytest.raises(AnnotationError, match=rf"a.jsonl:2: .*{message}"):
        load_annotations(path, cache)
