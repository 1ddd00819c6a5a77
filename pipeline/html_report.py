"""``emoray report``: one self-contained HTML page a person would rather look at than read.

For a job's output folder: an overview (videos, frames, faces, failures, the emotions of the whole job),
then one line per video (an index that stays usable for hundreds of videos) whose folded details hold, per
person, a thumbnail of its best face, a timeline of its smoothed emotions over all its tracks (stacked
areas, the time between its tracks left empty, episodes marked below), and the longest episodes, with a
link to the annotated video. Without persons (``--persons off``) the same is shown per track; tracks that
are no person (too short, never surely a face) are left out of the per-person views. Charts are
drawn by matplotlib into inline PNGs, thumbnails are cut from the source video by PyAV; the page has
no script and loads nothing.
"""

from __future__ import annotations

import base64
import html
import io
import os
import urllib.parse
from pathlib import Path

import av
import cv2
import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import storage
from jobs.files import move_into_place
from models.errors import EmorayError
from pipeline import html_text
from pipeline.outputs import PublishedOutputs
from pipeline.smoothing import smooth_tracks

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

COLORS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f2b701", "sad": "#1f77b4",
          "surprise": "#17becf", "neutral": "#a0a0a0"}
MAX_TRACKS = 8  # per video, the longest
MAX_EPISODES = 10  # per video, the longest
THUMBNAIL_PX = 96
UNFOLDED_UP_TO = 5  # a job of more videos shows its details folded, so the index stays readable


class ReportError(EmorayError, ValueError):
    """The folder holds no emoray results to report on."""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _emotion_bar(counts: dict[str, float]) -> str:
    """A horizontal bar of each emotion's share (HTML only)."""
    total = sum(counts.values()) or 1.0
    parts = "".join(f'<span style="width:{100 * value / total:.2f}%;background:{COLORS.get(label, "#ccc")}" '
                    f'title="{html_text.isolated(label)} {100 * value / total:.0f}%"></span>' for label, value in counts.items() if value)
    return f'<div class="bar">{parts}</div>'


def _people(tracks: pa.Table | None, persons: pa.Table | None) -> list[dict]:
    """Who a video's details show, most seen first: its persons (each over all its tracks), or, when persons
    were not followed, its tracks. Tracks that are no person (a glimpse, a hand) are left out."""
    if persons is not None and persons.num_rows:
        rows = persons.sort_by([("frames", "descending")]).slice(0, MAX_TRACKS).to_pylist()
        return [{"name": f"person {row['person_id']}", "column": "person_id", "id": row["person_id"],
                 "tracks": row["tracks"], "start": row["first_time"], "end": row["last_time"], **row} for row in rows]
    if tracks is None:
        return []
    rows = tracks.sort_by([("frames", "descending")]).slice(0, MAX_TRACKS).to_pylist()
    return [{"name": f"#{row['track_id']}", "column": "track_id", "id": row["track_id"], "tracks": [row["track_id"]],
             "start": row["start_time"], "end": row["end_time"], **row} for row in rows]


def _timeline(faces: pa.Table, people: list[dict], labels: list[str], tau: float, episodes: pa.Table | None) -> str:
    """Stacked smoothed probabilities over time, one row of axes per person (its tracks side by side, the
    time between them left empty), episodes as bars beneath."""
    track_id = faces.column("track_id").to_numpy()
    times = faces.column("pts_time").to_numpy()
    probabilities = np.stack([faces.column(f"p_{label}").to_numpy() for label in labels], axis=1)
    smoothed = smooth_tracks(track_id, times, probabilities, tau)
    figure, axes = plt.subplots(len(people), 1, figsize=(8, 1.25 * len(people)), squeeze=False, sharex=True)
    span = (float(times.min()), float(times.max()) if times.max() > times.min() else float(times.min()) + 1)
    for axis, who in zip(axes[:, 0], people):
        for track in who["tracks"]:
            rows = np.flatnonzero(track_id == track)
            rows = rows[np.argsort(times[rows])]
            axis.stackplot(times[rows], smoothed[rows].T, colors=[COLORS.get(label, "#ccc") for label in labels],
                           labels=labels, linewidth=0)
        if episodes is not None:
            for episode in episodes.filter(pc.equal(episodes.column(who["column"]), who["id"])).to_pylist():
                axis.axvspan(episode["start_time"], episode["end_time"], ymin=-0.14, ymax=-0.04, clip_on=False,
                             color=COLORS.get(episode["emotion"], "#ccc"))
        axis.set_ylim(0, 1)
        axis.set_xlim(*span)
        axis.set_yticks([])
        axis.set_ylabel(who["name"], rotation=0, ha="right", va="center")
        for side in ("top", "right", "left"):
            axis.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("seconds")
    return _png(figure)


def _thumbnail(source: str, pts_time: float, box: tuple[float, float, float, float], rotation: int) -> str | None:
    """The face at ``box`` in the frame of ``source`` shown at ``pts_time``, as a JPEG data URI (None if unreadable)."""
    from pipeline.sources.file import iter_frames

    try:
        source = str(storage.local_copy(source)) if storage.is_uri(source) else source  # this machine's cached copy
    except storage.StorageError:
        return None
    if not os.path.exists(source):
        return None
    try:
        frames = iter_frames(source, start_time=max(0.0, pts_time - 1e-3))
        try:
            frame = next(frames, None)
        finally:
            frames.close()
    except (EmorayError, av.error.FFmpegError, OSError):
        return None
    if frame is None:
        return None
    image = frame.to_rgb(rotation)
    x1, y1, x2, y2 = box
    margin = 0.15 * max(x2 - x1, y2 - y1)
    crop = image[max(0, int(y1 - margin)):int(y2 + margin), max(0, int(x1 - margin)):int(x2 + margin)]
    if not crop.size:
        return None
    crop = cv2.resize(crop, (THUMBNAIL_PX, round(THUMBNAIL_PX * crop.shape[0] / crop.shape[1])))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else None


def _video_section(outputs: PublishedOutputs, manifest: dict, destination: str, *, unfolded: bool) -> tuple[str, str]:
    """(the index row, the details, folded unless ``unfolded``) of one video."""
    e = html.escape
    video_id, path, status = manifest["video_id"], manifest.get("path", ""), manifest.get("status")
    counts = manifest.get("counts") or {}
    name = Path(path).name
    labels = (manifest.get("labels") or list(COLORS))
    faces = outputs.table("faces", video_id, ["track_id", "frame_index", "pts_time", *(f"p_{label}" for label in labels)])
    tracks, episodes = outputs.table("tracks", video_id), outputs.table("episodes", video_id)
    people = _people(tracks, outputs.table("persons", video_id))
    options = manifest.get("options") or {}
    tau = float(options.get("smoothing_seconds", 1.0))
    n_tracks = tracks.num_rows if tracks is not None else 0
    n_persons = sum(who["column"] == "person_id" for who in people)
    share = {label: 0.0 for label in labels}
    if tracks is not None and n_tracks:
        frames_per_track = tracks.column("frames").to_numpy()
        for label in labels:
            share[label] = float((tracks.column(f"share_{label}").to_numpy() * frames_per_track).sum())
    row = (f'<tr><td><a href="#v-{e(video_id)}">{html_text.text(name)}</a></td><td>{e(status or "")}</td>'
           f'<td>{counts.get("frames", 0)}</td><td>{counts.get("faces", 0)}</td><td>{n_persons}</td><td>{n_tracks}</td>'
           f'<td>{html_text.text(manifest.get("dominant_emotion") or "-")}</td><td>{_emotion_bar(share)}</td></tr>')
    body = [f'<details id="v-{e(video_id)}"{" open" if unfolded else ""}><summary><b>{html_text.text(name)}</b> · {e(status or "")} · '
            f'{counts.get("frames", 0)} frames · {counts.get("faces", 0)} faces · {_plural(n_persons, "person")} '
            f'in {_plural(n_tracks, "track")} · mostly {html_text.text(manifest.get("dominant_emotion") or "-")}</summary>',
            f'<p class="path">{html_text.text(path)}</p>']
    if manifest.get("error"):
        body.append(f'<p class="error">{html_text.text(manifest["error"])}</p>')
    annotated = (manifest.get("outputs") or {}).get("annotated")
    if annotated and outputs.exists(annotated):
        local = not storage.is_uri(annotated) and not storage.is_uri(destination)
        link = urllib.parse.quote(os.path.relpath(annotated, os.path.dirname(destination))) if local else annotated
        body.append(f'<p><a href="{e(link)}">annotated video</a></p>')
    if faces is not None and people:
        rotation = int((manifest.get("probe") or {}).get("rotation") or 0)
        cards = []
        for who in people:
            best_rows = faces.filter(pc.equal(faces.column("frame_index"), who["best_frame"]))
            pts = float(best_rows.column("pts_time")[0].as_py()) if best_rows.num_rows else who["start"]
            thumb = _thumbnail(path, pts, (who["best_x1"], who["best_y1"], who["best_x2"], who["best_y2"]), rotation)
            image = f'<img src="{thumb}" alt="{e(who["name"])}">' if thumb else '<div class="noimg">no picture</div>'
            cards.append(f'<figure class="card">{image}<figcaption>{e(who["name"])} · '
                         f'{html_text.text(who["dominant_emotion"])}<br>{who["start"]:.1f}–{who["end"]:.1f} s</figcaption></figure>')
        body.append(f'<div class="cards">{"".join(cards)}</div>')
        chart = _timeline(faces, people, labels, tau, episodes)
        body.append(f'<img class="timeline" src="{chart}" alt="emotions over time per person">')
    if episodes is not None and episodes.num_rows:
        top = episodes.sort_by([("duration_s", "descending")]).slice(0, MAX_EPISODES).to_pylist()
        who = (lambda ep: f"person {ep['person_id']}" if ep.get("person_id") is not None else f"#{ep['track_id']}")
        lines = "".join(f'<tr><td>{e(who(ep))}</td><td><span class="dot" style="background:{COLORS.get(ep["emotion"], "#ccc")}">'
                        f'</span>{html_text.text(ep["emotion"])}</td><td>{ep["start_time"]:.1f}</td><td>{ep["end_time"]:.1f}</td>'
                        f'<td>{ep["duration_s"]:.1f}</td><td>{ep["peak_score"]:.2f}</td></tr>' for ep in top)
        body.append('<table class="episodes"><tr><th>who</th><th>emotion</th><th>from s</th><th>to s</th>'
                    f'<th>seconds</th><th>peak</th></tr>{lines}</table>')
    body.append("</details>")
    return row, "\n".join(body)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
bdi { overflow-wrap: anywhere; } .index td:first-child { min-width: 12rem; }
h1 { margin-bottom: .2rem; } .overview { color: #555; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; text-align: left; border-bottom: 1px solid #eee; }
.bar { display: flex; width: 160px; height: 12px; background: #eee; } .bar span { display: block; height: 100%; }
details { margin: .6rem 0; padding: .4rem .6rem; border: 1px solid #ddd; border-radius: 6px; }
summary { cursor: pointer; } .path { color: #777; font-size: .85rem; } .error { color: #b00; }
.cards { display: flex; flex-wrap: wrap; gap: .6rem; } .card { margin: 0; text-align: center; font-size: .85rem; }
.card img, .noimg { width: 96px; border-radius: 4px; } .noimg { height: 96px; background: #eee; line-height: 96px; }
.timeline { max-width: 100%; } .dot { display: inline-block; width: .7rem; height: .7rem; border-radius: 50%; margin-right: .3rem; }
.legend span { margin-right: .8rem; }
"""


def write_report(out: str | os.PathLike, destination: str | os.PathLike | None = None) -> str:
    """Write the report of OUT (a folder or an object-store URI) to ``destination`` (default ``OUT/report.html``,
    in the store for a URI); returns where it is."""
    outputs = PublishedOutputs(out)
    out = str(out)
    destination = str(destination) if destination else (storage.join(out, "report.html") if outputs.is_uri
                                                           else str(Path(out) / "report.html"))
    manifests = outputs.manifests()
    if not manifests:
        raise ReportError(f"{out}: no results to report on (no {out}/manifest/*.json)")
    manifests.sort(key=lambda m: str(m.get("path", "")))
    sections = [_video_section(outputs, manifest, destination, unfolded=len(manifests) <= UNFOLDED_UP_TO)
                for manifest in manifests]
    complete = [m for m in manifests if m.get("status") == "complete"]
    failed = len(manifests) - len(complete)
    frames = sum((m.get("counts") or {}).get("frames", 0) for m in complete)
    faces = sum((m.get("counts") or {}).get("faces", 0) for m in complete)
    legend = "".join(f'<span><span class="dot" style="background:{color}"></span>{label}</span>' for label, color in COLORS.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emoray report: {html_text.isolated(out)}</title>
<style>{STYLE}</style></head>
<body><h1>emoray report</h1>
<p class="overview">{html_text.text(out)} · {_plural(len(manifests), "video")} ({len(complete)} complete, {failed} failed) ·
{frames} frames · {faces} faces</p>
<p class="legend">{legend}</p>
<table class="index"><tr><th>video</th><th>status</th><th>frames</th><th>faces</th><th>persons</th><th>tracks</th><th>mostly</th>
<th>emotions (share of tracked time)</th></tr>
{"".join(row for row, _ in sections)}
</table>
<h2>Videos</h2>
{"".join(details for _, details in sections)}
</body></html>
"""
    if storage.is_uri(destination):
        storage.write_object(destination, lambda handle: handle.write(page.encode()))
        return destination
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(page)
    move_into_place(temporary, path)
    return destination
