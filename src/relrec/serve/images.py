"""A new item's image in a by-content request: uploaded bytes or a catalogue item's image."""

from __future__ import annotations

import base64
import binascii
import io

from relrec.serve.engine import ServedModel
from relrec.serve.errors import ServeError
from relrec.serve.schemas import ContentRequest


def _readable_image(image_module, stream) -> bool:
    """Whether Pillow recognises and verifies the bytes as an image (nothing is decoded)."""
    try:
        with image_module.open(stream) as picture:
            picture.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image"
        return False


def check_image(model: ServedModel, request: ContentRequest) -> str | None:
    """The new item's image: uploaded bytes or a catalogue item's image — never a path on
    the server (refused with one message, whatever the path, so nothing can be probed)."""
    if request.image is not None:
        raise ServeError(422, "invalid_request",
                         "image: server-side paths are not accepted; send the image's "
                         "bytes as image_base64 or name a catalogue item with "
                         "image_item_id")
    if request.image_base64 is not None and request.image_item_id is not None:
        raise ServeError(422, "invalid_request",
                         "image_base64, image_item_id: give one of them, not both")
    if request.image_base64 is not None:
        data = request.image_base64.strip()
        if data.startswith("data:") and ";base64," in data[:100]:
            data = data.split(";base64,", 1)[1]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(422, "invalid_request",
                             "image_base64: not valid base64") from None
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow comes with the visual extra
            Image = None
        if not raw or Image is not None and not _readable_image(Image, io.BytesIO(raw)):
            raise ServeError(422, "invalid_request",
                             "image_base64: not a readable image file")
    elif request.image_item_id is not None:
        index = model.catalogue.require_indices([request.image_item_id])[0]
        if model.catalogue.resolve_image(index) is None:
            raise ServeError(422, "invalid_request",
                             f"image_item_id: item {request.image_item_id!r} has no image "
                             "file in the server's image folder")
    else:
        return None
    return ("image accepted but not used: this model has no visual input"
            if not model.tower.config.visual_dim else
            "image accepted but not used: no visual encoder is wired into the service yet")
