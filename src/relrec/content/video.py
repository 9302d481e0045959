"""Video files → visual vectors: representative frames sampled with PyAV, embedded by an
image encoder and mean-pooled.

A missing or undecodable video gives ``ok=False`` and a zero row (counted, logged once), like
an unreadable image in :mod:`relrec.content.image`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from relrec.content.image import ImageEncoder, log_failures, progress_bar
from relrec.vectors import l2_normalize

log = logging.getLogger("relrec.content")


def _frame_seconds(frame, stream) -> float | None:
    if frame.pts is None:
        return None if frame.time is None else float(frame.time)
    base = frame.time_base or stream.time_base
    return float(frame.pts * base)


def _sequential_frames(path, n_frames: int) -> list:
    """Decode every frame once, keeping a thinned, evenly strided buffer (bounded memory)."""
    import av

    kept: list = []
    stride, seen = 1, 0
    limit = max(2 * n_frames, 8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if seen % stride == 0:
                kept.append(frame.to_image())
                if len(kept) >= limit:
                    kept = kept[::2]
                    stride *= 2
            seen += 1
    if len(kept) <= n_frames:
        return kept
    positions = np.linspace(0, len(kept) - 1, n_frames + 2)[1:-1]
    return [kept[int(round(p))] for p in positions]


def _keyframe_pts(container, stream) -> list[int]:
    """Presentation timestamps of the keyframes, from a demux pass (no decoding: cheap)."""
    keys = sorted(packet.pts for packet in container.demux(stream)
                  if packet.is_keyframe and packet.pts is not None)
    container.seek(0, stream=stream, backward=True, any_frame=False)
    return keys


def _seek_frames(container, stream, targets: list[float]) -> list:
    """The first frame at or after each target time (seconds), decoding forward from the
    keyframe before it; keeps decoding instead of seeking when that keyframe is behind us."""
    import bisect

    time_base = stream.time_base
    keyframes = _keyframe_pts(container, stream)
    decoder, last_pts = None, None
    frames, seen_pts = [], set()
    for target in targets:
        target_pts = int(target / time_base)
        at = bisect.bisect_right(keyframes, target_pts) - 1
        keyframe = keyframes[at] if at >= 0 else None
        resume = (decoder is not None and last_pts is not None and last_pts < target_pts
                  and (keyframe is None or keyframe <= last_pts))
        if not resume:
            container.seek(keyframe if keyframe is not None else target_pts, stream=stream,
                           backward=True, any_frame=False)
            decoder = container.decode(stream)
        chosen = None
        for frame in decoder:
            chosen = frame
            if frame.pts is not None:
                last_pts = frame.pts
            seconds = _frame_seconds(frame, stream)
            if seconds is None or seconds >= target - 1e-6:
                break
        if chosen is None:
            raise ValueError("no frame after seek")
        if chosen.pts is None or chosen.pts not in seen_pts:  # a very short clip repeats
            seen_pts.add(chosen.pts)
            frames.append(chosen.to_image())
    return frames


def sample_video_frames(path, n_frames: int = 4) -> list:
    """``n_frames`` representative frames (RGB PIL images) of a video, via PyAV.

    Evenly spaced over the duration — at the centres of ``n_frames`` equal slices, which
    avoids the black first and last frames — by seeking to each timestamp (decoding forward
    from the keyframe before it, or on from the previous target when no keyframe lies
    between). Streams without a known duration (or whose seeks fail) are decoded sequentially
    instead. Fewer frames come back when the video is shorter. Raises on a missing or
    undecodable file.
    """
    import av

    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    if not Path(path).is_file():
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None \
            else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames: list = []
        if duration > 0 and stream.time_base is not None:
            targets = [float(t) for t in start + duration * (np.arange(n_frames) + 0.5) / n_frames]
            try:
                frames = _seek_frames(container, stream, targets)
            except (av.error.FFmpegError, ValueError):
                log.debug("seeking in %s failed; decoding sequentially", path)
                frames = []
        if frames:
            return frames
    # no duration, or seeking failed: decode in order
    sequential = _sequential_frames(path, n_frames)
    if not sequential:
        raise ValueError(f"no decodable frame in {path}")
    return sequential


def encode_videos(encoder: ImageEncoder, paths: list[str], n_frames: int = 4,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per video: sample ``n_frames`` frames, embed them, mean-pool, re-normalise.

    Returns ``(vectors float32 (n, dim), ok bool (n,))``; a missing or undecodable video gives
    ``ok=False`` and a zero row (counted, logged once).
    """
    paths = list(paths)
    encoder.ensure_loaded()
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    failed: list[str] = []
    with progress_bar("video embeddings", disable=not progress) as bar:
        task = bar.add_task("videos", total=len(paths))
        for row, path in enumerate(paths):
            try:
                if path is None or str(path) == "":
                    raise FileNotFoundError("no path")
                frames = sample_video_frames(path, n_frames)
                vectors, frame_ok = encoder.encode_pil(frames)
                if frame_ok.any():
                    pooled = vectors[frame_ok].mean(axis=0, keepdims=True)
                    out[row] = l2_normalize(pooled)[0]
                    ok[row] = bool(np.linalg.norm(out[row]) > 0)
            except Exception:  # noqa: BLE001 - any undecodable video is skipped, counted
                log.debug("video %s could not be embedded", path, exc_info=True)
            if not ok[row]:
                failed.append(str(path))
            bar.advance(task, 1)
    log_failures("videos", failed, len(paths))
    return out, ok
