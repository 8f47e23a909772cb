"""Concept diagrams drawn in code (matplotlib patches), so they render in the book and in Colab alike.

Each public ``draw_*`` function returns a matplotlib figure with a title; the chapter gives it alt
text and a caption. The two primitives below keep the diagrams in one visual language: rounded boxes
in the book's palette, joined by arrows.

Used in chapters 3 to 7 and 9.
"""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from bigmodel_utils.validation import check_number, positive


def box(ax, x: float, y: float, width: float, height: float, text: str, color: str = "#dbe9f6",
        fontsize: float = 9, **text_kwargs):
    """Draw a rounded box with centred ``text``; ``(x, y)`` is its lower-left corner, in axis units."""
    positive("width", width)
    positive("height", height)
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="0.3", linewidth=1.0))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize, **text_kwargs)
    return x + width / 2, y + height / 2


def arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", color: str = "0.25",
          fontsize: float = 8):
    """Draw an arrow from ``start`` to ``end`` (axis units), with an optional label at its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.2))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, text, ha="left", va="center",
                fontsize=fontsize, color=color)


def canvas(width: float, height: float, title: str, figsize: tuple[float, float] | None = None):
    """Return ``(fig, ax)``: an axis spanning ``[0, width] x [0, height]`` with no ticks, and a title."""
    import matplotlib.pyplot as plt

    if not title:
        raise ValueError("every diagram needs a title")
    fig, ax = plt.subplots(figsize=figsize or (width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(title)
    return fig, ax


# ---------------------------------------------------------------------------
# Concept diagrams of chapters 3, 4, 5 and 9
# ---------------------------------------------------------------------------

HIGHLIGHT = "#fde0c5"  # the part the caption points at
GRADIENT = "#c0392b"  # backward pass and gradients
PALE_GREEN = "#d9f0d3"


def _column(ax, x: float, top: float, width: float, rows, height: float = 0.42, gap: float = 0.2,
            fontsize: float = 8.5):
    """Stack ``rows`` of (text, color) boxes downwards from ``top``, joined by arrows; return the last y."""
    y = top
    previous = None
    for text, color in rows:
        y -= height
        centre = box(ax, x, y, width, height, text, color=color, fontsize=fontsize)
        if previous is not None:
            arrow(ax, (centre[0], previous - height / 2 - 0.01), (centre[0], y + height + 0.01))
        previous = centre[1]
        y -= gap
    return y


def draw_cnn_comparison(classic_params: int, improved_params: int, dense_share: float, width: int = 16):
    """The classic CNN (224x224x3, Flatten) and the improved one (BN, GAP, dropout) side by side.

    ``classic_params`` and ``dense_share`` (0 to 1) label the classic model at
    224x224x3, ``improved_params`` the improved one at ``width``; the chapter
    computes them. Returns the figure. Used in chapter 4.
    """
    check_number("dense_share", dense_share, 0, 1, include_minimum=False, include_maximum=False)
    fig, ax = canvas(10, 7.4, "The classic CNN and the improved one, layer by layer", figsize=(9.5, 7.2))
    ax.text(2.5, 7.05, f"classic: {classic_params:,} parameters", ha="center", fontsize=10, weight="bold")
    ax.text(7.5, 7.05, f"improved (width {width}): {improved_params:,} parameters", ha="center",
            fontsize=10, weight="bold")
    classic = [("input 224 x 224 x 3 (28 x 28 x 1, resized, copied)", "#eeeeee"),
               ("Conv2D 32, 3x3, ReLU", None), ("MaxPooling 2x2", None),
               ("Conv2D 64, 3x3, ReLU", None), ("MaxPooling 2x2", None),
               ("Conv2D 128, 3x3, ReLU", None), ("MaxPooling 2x2", None),
               ("Flatten: 26 x 26 x 128 = 86,528 values", HIGHLIGHT),
               (f"Dense 512, ReLU: {dense_share:.1%} of all parameters", HIGHLIGHT),
               ("Dense 10, softmax", None)]
    improved = [("input 28 x 28 x 1 (augmented in the input pipeline)", "#eeeeee"),
                (f"2 x [Conv2D {width}, 3x3 + BatchNorm + ReLU]", PALE_GREEN), ("MaxPooling 2x2", None),
                (f"2 x [Conv2D {2 * width}, 3x3 + BatchNorm + ReLU]", PALE_GREEN), ("MaxPooling 2x2", None),
                (f"2 x [Conv2D {4 * width}, 3x3 + BatchNorm + ReLU]", PALE_GREEN),
                (f"GlobalAveragePooling: {4 * width} values, any image size", PALE_GREEN),
                ("Dropout", PALE_GREEN), ("Dense 128, ReLU", None), ("Dense 10, softmax (float32)", None)]
    for x, rows in ((0.2, classic), (5.2, improved)):
        _column(ax, x, 6.85, 4.6, [(text, color or "#dbe9f6") for text, color in rows])
    return fig


def draw_computation_graph():
    """The two-layer network of chapter 3 as the graph backpropagation walks: forward on top, gradients below.

    Returns the figure. Used in chapter 3.
    """
    fig, ax = canvas(12, 4.2, "The computation graph of a two-layer network: forward, then backward",
                     figsize=(11, 3.9))
    nodes = [("inputs $X$", "#eeeeee"), ("$Z_1 = XW_1 + b_1$", None), ("$H = \\mathrm{ReLU}(Z_1)$", None),
             ("$Z_2 = HW_2 + b_2$", None), ("$L$ = cross-entropy\nof softmax$(Z_2)$, $Y$", HIGHLIGHT)]
    width, height, gap, y = 1.9, 0.8, 0.45, 2.5
    centres = []
    for i, (text, color) in enumerate(nodes):
        centres.append(box(ax, 0.3 + i * (width + gap), y, width, height, text, color=color or "#dbe9f6",
                           fontsize=9))
    for (x0, _), (x1, _) in zip(centres, centres[1:]):
        arrow(ax, (x0 + width / 2, y + 0.55), (x1 - width / 2, y + 0.55))
    grads = ["$\\partial L/\\partial W_1 = X^\\top \\partial Z_1$",
             "$\\partial Z_1 = \\partial H \\odot \\mathbb{1}[Z_1 > 0]$",
             "$\\partial H = \\partial Z_2 W_2^\\top$\n$\\partial L/\\partial W_2 = H^\\top \\partial Z_2$",
             "$\\partial Z_2 = (\\mathrm{softmax}(Z_2) - Y)/n$"]
    for i, text in enumerate(grads):
        x_centre = centres[i + 1][0]
        ax.text(x_centre, 1.0, text, ha="center", va="center", fontsize=8.5, color=GRADIENT)
        arrow(ax, (centres[i + 1][0] + 0.2, y - 0.05), (centres[i + 1][0] + 0.2, 1.45), color=GRADIENT)
    for (x0, _), (x1, _) in zip(centres[1:], centres[2:]):
        arrow(ax, (x1 - width / 2, y + 0.2), (x0 + width / 2, y + 0.2), color=GRADIENT)
    ax.text(6, 3.75, "forward: each box computes from the one on its left (black arrows)", ha="center",
            fontsize=9)
    ax.text(6, 0.25, "backward: each gradient reuses the one on its right (red); "
            "$\\partial Z$ is short for $\\partial L / \\partial Z$", ha="center", fontsize=9, color=GRADIENT)
    return fig


def draw_tf_data_pipeline():
    """The ``tf.data`` input pipeline of ``tensorflow_only.make_tf_dataset``, stage by stage, and where it runs.

    Returns the figure. Used in chapter 4.
    """
    fig, ax = canvas(12, 3.3, "The input pipeline: from uint8 arrays to batches on the accelerator",
                     figsize=(11, 3.1))
    stages = [("uint8 arrays\n(N, 28, 28)", "#eeeeee"), ("cache()\nraw uint8\nin memory", None),
              ("shuffle(N)\nnew order\nevery epoch", None), ("batch(B)", None),
              ("map(): scale\nto [0, 1],\nresize\n(parallel)", None),
              ("map():\naugment, one\nbatch at\na time", PALE_GREEN), ("prefetch()\nnext batches\nready", None),
              ("model.fit\non the GPU", HIGHLIGHT)]
    width, gap, y = 1.22, 0.28, 1.1
    centres = [box(ax, 0.15 + i * (width + gap), y, width, 1.2, text, color=color or "#dbe9f6", fontsize=8)
               for i, (text, color) in enumerate(stages)]
    for (x0, y0), (x1, _) in zip(centres, centres[1:]):
        arrow(ax, (x0 + width / 2, y0), (x1 - width / 2, y0))
    ax.text(5.4, 0.55, "CPU: prepares the next batches", ha="center", fontsize=9)
    ax.text(11.2, 0.55, "accelerator", ha="center", fontsize=9)
    ax.plot([10.45, 10.45], [0.35, 2.6], color="0.5", linestyle=":", linewidth=1)
    ax.text(8.26, 2.75, "augmentation runs here, outside the model,\nso it cannot switch XLA off",
            ha="center", fontsize=8.5, color="0.3")
    return fig


def draw_hyperband_brackets(rounds):
    """Hyperband's brackets: in each, many models train briefly and the best third go on, longer.

    ``rounds`` is a list of dicts with ``bracket``, ``round``, ``trials`` and
    ``epochs`` (``tuning.hyperband_schedule(...).rounds`` of one iteration).
    Returns the figure. Used in chapter 5.
    """
    rounds = [r for r in rounds if r.get("iteration", 0) == 0]
    if not rounds:
        raise ValueError("rounds must hold at least one round of a Hyperband schedule")
    brackets = sorted({r["bracket"] for r in rounds}, reverse=True)
    columns = max(r["round"] for r in rounds) + 1
    fig, ax = canvas(2.2 + 2.3 * columns, 0.6 + 1.0 * len(brackets),
                     "Hyperband's brackets: start many models, keep the best, train them longer",
                     figsize=(1.6 + 2.0 * columns, 0.9 + 0.85 * len(brackets)))
    most = max(r["trials"] for r in rounds)
    for row, bracket in enumerate(brackets):
        y = 0.3 + (len(brackets) - 1 - row) * 1.0
        ax.text(0.1, y + 0.35, f"bracket {bracket}", va="center", fontsize=9, weight="bold")
        mine = sorted((r for r in rounds if r["bracket"] == bracket), key=lambda r: r["round"])
        previous = None
        for r in mine:
            x = 1.6 + 2.3 * r["round"]
            shade = 0.25 + 0.75 * r["trials"] / most  # more models, darker
            color = (1 - 0.45 * shade, 1 - 0.25 * shade, 1 - 0.05 * shade)
            epochs = f"{r['epochs']} epoch{'s' * (r['epochs'] != 1)}"
            models = f"{r['trials']} model{'s' * (r['trials'] != 1)}"
            box(ax, x, y, 1.9, 0.7, f"{models}\nto {epochs}", color=color, fontsize=8.5)
            if previous is not None:
                arrow(ax, (previous + 1.9, y + 0.35), (x, y + 0.35))
            previous = x
    return fig


def draw_dp_sgd_step():
    """One DP-SGD step: per-example gradients, clipped to norm C, summed, noised, averaged.

    Returns the figure. Used in chapter 9.
    """
    fig, ax = canvas(13, 3.9, "One DP-SGD step: clip every example's gradient, then add noise to the sum",
                     figsize=(11.5, 3.5))
    clip_norm = 0.9
    for i, length in enumerate((0.6, 1.7, 1.1)):
        y = 2.75 - 0.85 * i
        box(ax, 0.1, y, 1.4, 0.6, f"example {i + 1}:\ngradient $g_{i + 1}$", fontsize=8)
        ax.add_patch(FancyArrowPatch((1.7, y + 0.3), (1.7 + length, y + 0.3), arrowstyle="-|>",
                                     mutation_scale=10, color="0.3"))
        ax.add_patch(FancyArrowPatch((4.9, y + 0.3), (4.9 + min(length, clip_norm), y + 0.3), arrowstyle="-|>",
                                     mutation_scale=10, color=GRADIENT))
    box(ax, 3.75, 0.95, 0.8, 2.55, "clip\nto\nnorm\n$C$", color="#f6d5d1", fontsize=8.5)
    arrow(ax, (3.45, 2.2), (3.75, 2.2))
    arrow(ax, (4.55, 2.2), (4.85, 2.2))
    ax.plot([4.9 + clip_norm] * 2, [0.95, 3.5], color=GRADIENT, linestyle="--", linewidth=1)
    ax.text(4.9 + clip_norm, 3.6, "$C$", color=GRADIENT, fontsize=9, ha="center")
    ax.text(2.5, 0.55, "per-example gradients\n(norms differ)", ha="center", fontsize=8.5)
    ax.text(5.35, 0.55, "$g_i \\min(1, C / \\|g_i\\|)$", ha="center", fontsize=8.5, color=GRADIENT)
    sum_centre = box(ax, 6.4, 1.8, 1.4, 0.8, "sum over\nthe batch", fontsize=8.5)
    noise = box(ax, 8.2, 1.8, 2.0, 0.8, "+ Gaussian noise\n$\\mathcal{N}(0, \\sigma^2 C^2 I)$", color=HIGHLIGHT,
                fontsize=8.5)
    step = box(ax, 10.6, 1.8, 2.2, 0.8, "divide by $B$,\noptimiser step", fontsize=8.5)
    for y in (3.05, 2.2, 1.35):
        arrow(ax, (6.0, y), (6.4, sum_centre[1]))
    arrow(ax, (7.8, sum_centre[1]), (8.2, noise[1]))
    arrow(ax, (10.2, noise[1]), (10.6, step[1]))
    ax.text(9.6, 0.9, "clipping bounds what one example can change;\nthe noise hides what it did change",
            ha="center", fontsize=8.5)
    return fig


def draw_grad_cam():
    """How Grad-CAM weighs the last convolution's feature maps by the gradient of the class score.

    Returns the figure. Used in chapter 9.
    """
    fig, ax = canvas(12, 4.4, "Grad-CAM: weigh each feature map by how much it raises the class score",
                     figsize=(11, 4.0))
    y = 2.5
    image = box(ax, 0.2, y, 1.4, 1.0, "image $x$", color="#eeeeee")
    convs = box(ax, 2.0, y, 1.6, 1.0, "convolutional\nlayers")
    for k in range(3):
        box(ax, 4.0 + 0.18 * k, y - 0.2 + 0.2 * k, 1.1, 0.85, "" if k < 2 else "maps $A^k$", color=PALE_GREEN,
            fontsize=8.5)
    head = box(ax, 6.1, y, 1.6, 1.0, "pooling and\ndense head")
    score = box(ax, 8.2, y, 1.5, 1.0, "class score\n$s_c$ (logit)", color=HIGHLIGHT)
    arrow(ax, (1.6, image[1]), (2.0, convs[1]))
    arrow(ax, (3.6, convs[1]), (4.0, convs[1]))
    arrow(ax, (5.5, convs[1]), (6.1, head[1]))
    arrow(ax, (7.7, head[1]), (8.2, score[1]))
    weights = box(ax, 5.6, 0.55, 3.4, 0.9, "$\\alpha_k$ = mean over pixels of $\\partial s_c / \\partial A^k$\n"
                  "(one weight per map)", color="#f6d5d1", fontsize=8.5)
    arrow(ax, (score[0], y - 0.02), (weights[0] + 1.2, 1.47), color=GRADIENT)
    cam = box(ax, 9.6, 0.55, 2.2, 0.9, "heat map:\nReLU$(\\sum_k \\alpha_k A^k)$, upsampled", color=HIGHLIGHT,
              fontsize=8)
    arrow(ax, (9.0, weights[1]), (9.6, cam[1]), color=GRADIENT)
    ax.plot([4.5, 4.5, 10.7], [y - 0.22, 0.25, 0.25], color="0.35", linewidth=1.0)
    arrow(ax, (10.7, 0.25), (10.7, 0.53))
    ax.text(4.6, 0.05, "the maps $A^k$ themselves", ha="left", va="bottom", fontsize=8.5, color="0.35")
    ax.text(6.0, 4.15, "forward: black; the gradient of the class score: red", ha="center", fontsize=9)
    return fig


def draw_attention_shapes(batch: str = "B", length: str = "T", width: str = "d", heads: str = "H"):
    """Self-attention with the shape of every tensor: x is projected to Q, K and V, split into heads,
    scored, masked, weighed and merged back. Returns the figure. Used in chapter 6."""
    fig, ax = canvas(10.5, 4.6, "Causal self-attention, with the shape of every tensor", figsize=(10.5, 4.6))
    head = f"{batch}, {heads}, {length}, {width}/{heads}"
    x = box(ax, 0.2, 2.0, 1.5, 0.8, f"x\n({batch}, {length}, {width})")
    q = box(ax, 2.6, 3.3, 1.9, 0.8, f"Q = x W_Q\n({head})", color="#fde0c5")
    k = box(ax, 2.6, 2.0, 1.9, 0.8, f"K = x W_K\n({head})", color="#fde0c5")
    v = box(ax, 2.6, 0.7, 1.9, 0.8, f"V = x W_V\n({head})", color="#fde0c5")
    for target in (q, k, v):
        arrow(ax, (x[0] + 0.75, x[1]), (target[0] - 0.95, target[1]))
    s = box(ax, 5.3, 2.65, 2.1, 0.8, f"scores Q Kᵀ / √(d/{heads})\n({batch}, {heads}, {length}, {length})",
            color="#e5d8f0")
    arrow(ax, (q[0] + 0.95, q[1]), (s[0] - 1.05, s[1] + 0.2))
    arrow(ax, (k[0] + 0.95, k[1]), (s[0] - 1.05, s[1] - 0.2))
    m = box(ax, 5.3, 1.35, 2.1, 0.8, "causal mask, softmax\nrows sum to 1", color="#e5d8f0")
    arrow(ax, (s[0], s[1] - 0.4), (m[0], m[1] + 0.4))
    o = box(ax, 8.1, 1.35, 2.2, 0.8, f"weights × V, then W_O\n({batch}, {length}, {width})",
            color="#d5ecd4")
    arrow(ax, (m[0] + 1.05, m[1]), (o[0] - 1.1, o[1]))
    arrow(ax, (v[0] + 0.95, v[1]), (o[0] - 1.1, o[1] - 0.3))
    return fig


def draw_gpt_block(num_layers: int | str = "L"):
    """A GPT: embeddings, ``num_layers`` pre-LayerNorm blocks with residual connections, the tied output
    layer. Returns the figure. Used in chapter 6."""
    fig, ax = canvas(8.0, 6.2, "A GPT: embeddings, a stack of pre-LayerNorm blocks, the output layer",
                     figsize=(8.0, 6.2))
    steps = [("token ids (B, T)", "#f2f2f2"), ("token + position embedding", "#fde0c5"),
             ("LayerNorm → causal self-attention", "#e5d8f0"), ("+ (residual)", "#ffffff"),
             ("LayerNorm → Dense 4d, GELU → Dense d", "#d5ecd4"), ("+ (residual)", "#ffffff"),
             ("final LayerNorm → logits (B, T, V)\n(the token embedding, transposed)", "#fde0c5")]
    y = 5.4
    centres = []
    for label, color in steps:
        height = 0.7 if "\n" in label else 0.5
        centres.append(box(ax, 1.0, y - height, 4.6, height, label, color=color))
        y -= height + 0.28
    for upper, lower in zip(centres, centres[1:]):
        arrow(ax, (upper[0], upper[1] - 0.25), (lower[0], lower[1] + 0.25))
    for skip_from, skip_to in ((1, 3), (3, 5)):  # the residual paths jump over each sub-layer
        start, end = centres[skip_from], centres[skip_to]
        ax.annotate("", xy=(5.6, end[1]), xytext=(5.6, start[1] - 0.25),
                    arrowprops={"arrowstyle": "-|>", "connectionstyle": "arc3,rad=-0.5", "color": "0.45"})
    ax.add_patch(Rectangle(
        (0.8, centres[5][1] - 0.4), 5.0, centres[2][1] - centres[5][1] + 0.8, fill=False,
        linestyle="--", edgecolor="0.5"))
    ax.text(6.6, (centres[2][1] + centres[5][1]) / 2, f"× {num_layers}\nblocks", fontsize=10, va="center")
    return fig


# ---------------------------------------------------------------------------
# Chapter 7: the service
# ---------------------------------------------------------------------------


def draw_serving(max_batch_size: int | str = "B"):
    """Chapter 7's service: clients, Ray Serve's HTTP proxy, a replica's request queue, the dynamic batch
    and the two models. Returns the figure. Used in chapter 7.
    """
    fig, ax = canvas(12, 3.6, "A request's way through the service", figsize=(11, 3.3))
    for i, y in enumerate((2.55, 1.65, 0.75)):
        box(ax, 0.15, y, 1.35, 0.62, f"client {i + 1}\nPOST JSON", color="#eeeeee", fontsize=8)
        arrow(ax, (1.55, y + 0.31), (2.35, 1.8))
    box(ax, 2.4, 1.25, 1.8, 1.1, "HTTP proxy\n(Ray Serve)\nroutes to a\nreplica", fontsize=8)
    arrow(ax, (4.25, 1.8), (4.85, 1.8))
    box(ax, 4.9, 1.25, 1.9, 1.1, "FastAPI\nvalidates the\nbody: 4xx naming\nthe field", color=PALE_GREEN,
        fontsize=8)
    arrow(ax, (6.85, 1.8), (7.35, 1.8))
    box(ax, 7.4, 1.25, 1.9, 1.1, f"@serve.batch\nwaits a few ms,\ntakes up to {max_batch_size}\nrequests",
        color=HIGHLIGHT, fontsize=8)
    arrow(ax, (9.35, 2.05), (9.95, 2.45))
    arrow(ax, (9.35, 1.55), (9.95, 1.15))
    box(ax, 10.0, 2.2, 1.85, 0.7, "CNN: one padded\nbatch of images", fontsize=8)
    box(ax, 10.0, 0.75, 1.85, 0.7, "GPT: rows decode\ntogether (KV cache)", fontsize=8)
    ax.plot([4.65, 4.65, 11.95, 11.95, 4.65], [0.55, 3.15, 3.15, 0.55, 0.55], color="0.5", linestyle=":",
            linewidth=1)
    ax.text(8.3, 3.3, "one replica (a process); Serve can run many, on many machines", ha="center", fontsize=8.5,
            color="0.3")
    return fig


# ---------------------------------------------------------------------------
# Chapter 6: one model on several devices
# ---------------------------------------------------------------------------

DEVICE_COLORS = ("#dbe9f6", "#fde0c5")  # device 0, device 1


def draw_parallelism():
    """Data, tensor and pipeline parallelism on two devices, side by side: what each device holds and
    what they exchange. Returns the figure. Used in chapter 6."""
    fig, ax = canvas(12.6, 4.6, "Three ways to split training across two devices", figsize=(11.5, 4.2))
    panels = (
        (0.1, "Data parallelism (ZeRO)", "all-reduce the gradients\nonce per step"),
        (4.3, "Tensor parallelism", "combine partial results\ninside every layer"),
        (8.5, "Pipeline parallelism", "pass activations between\nstages, micro-batch by micro-batch"),
    )
    for x, title, exchange in panels:
        ax.text(x + 2.0, 4.15, title, ha="center", fontsize=10, fontweight="bold")
        ax.text(x + 2.0, 0.15, exchange, ha="center", fontsize=8, color="0.3")
        for device in range(2):
            ax.text(x + 0.95 + 2.1 * device, 3.75, f"device {device}", ha="center", fontsize=8.5)
    for device, color in enumerate(DEVICE_COLORS):  # data: a full copy each, half the batch each
        left = 0.15 + 2.1 * device
        box(ax, left, 3.0, 1.8, 0.5, f"batch half {device + 1}", color="#f2f2f2", fontsize=8)
        box(ax, left, 1.1, 1.8, 1.6, "all layers,\nall weights\n(ZeRO: 1/2 of the\noptimizer state,\n"
            "gradients, weights)", color=color, fontsize=7.5)
        arrow(ax, (left + 0.9, 2.98), (left + 0.9, 2.72))
    arrow(ax, (2.0, 1.9), (2.2, 1.9))
    for device, color in enumerate(DEVICE_COLORS):  # tensor: every layer's matrices split in two
        left = 4.35 + 2.1 * device
        box(ax, left, 3.0, 1.8, 0.5, "the whole batch", color="#f2f2f2", fontsize=8)
        for row, (name, what) in enumerate((("attention", "heads"), ("MLP", "units"))):
            box(ax, left, 2.0 - 0.85 * row, 1.8, 0.65, f"{name}: half the\n{what} of each block",
                color=color, fontsize=7.5)
        arrow(ax, (left + 0.9, 2.98), (left + 0.9, 2.68))
    arrow(ax, (6.2, 1.85), (6.4, 1.85))
    for device, color in enumerate(DEVICE_COLORS):  # pipeline: half the layers each
        left = 8.55 + 2.1 * device
        box(ax, left, 3.0, 1.8, 0.5, ("micro-batches 1, 2, ..." if device == 0 else
                                      "activations of stage 1"), color="#f2f2f2", fontsize=7.5)
        box(ax, left, 1.1, 1.8, 1.6, f"blocks {device * 2 + 1} and {device * 2 + 2}\nof 4, all their\n"
            "weights", color=color, fontsize=8)
    arrow(ax, (10.4, 1.9), (10.6, 1.9), color="0.25")
    arrow(ax, (9.45, 2.98), (9.45, 2.72))
    return fig
