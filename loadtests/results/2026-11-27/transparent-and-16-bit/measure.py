"""The 271 test digits of the 'dark on light' condition as a browser canvas exports them (black ink whose darkness
is the alpha channel, over transparent black) and as 16-bit grey PNGs, sent to a running server's /predict: accuracy
per model. Usage: python measure.py URL"""
import io, sys
import httpx, numpy as np
from PIL import Image
from loadtests.digit_images import CONDITIONS_BY_NAME, condition_files

url = sys.argv[1]
files = condition_files(CONDITIONS_BY_NAME["dark on light"])
def canvas(data):
    picture = Image.open(io.BytesIO(data))
    darkness = Image.eval(picture.convert("L"), lambda v: 255 - v)
    return Image.merge("RGBA", [Image.new("L", picture.size, 0)] * 3 + [darkness])
def sixteen(data):
    return Image.fromarray(np.asarray(Image.open(io.BytesIO(data)).convert("L")).astype(np.uint16) * 257)
def png(image):
    b = io.BytesIO(); image.save(b, "PNG"); return b.getvalue()
with httpx.Client(base_url=url, timeout=60) as client:
    for model in ("lenet5-digits", "resnet18-digits", "vgg11-digits"):
        row = [model]
        for name, make in (("as sent", lambda d: d), ("canvas export", lambda d: png(canvas(d))), ("16-bit", lambda d: png(sixteen(d)))):
            hits = sum(client.post("/predict", files={"image": ("p.png", make(f.data))}, data={"model": model}).json().get("label") == str(f.label) for f in files)
            row.append(f"{name} {hits / len(files):.3f}")
        print(" | ".join(row), flush=True)
