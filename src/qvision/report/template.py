"""The report page's Jinja2 template: plain HTML and CSS, nothing fetched from a network."""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.verdict { padding: 0.8em 1em; border-radius: 4px; font-size: 1.05em; }
.ok { background: #e3f4e3; border: 1px solid #6a6; } .bad { background: #fbe3e3; border: 1px solid #c66; }
.unknown { background: #eee; border: 1px solid #aaa; }
.grid { display: flex; flex-wrap: wrap; gap: 0.5em; } .note { color: #555; font-size: 0.9em; }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.4em; }
.thumbs figure { margin: 0; width: 96px; font-size: 0.7em; color: #444; overflow-wrap: anywhere; }
.thumbs img { display: block; max-width: 96px; max-height: 96px; } .thumbs .hurt { color: #a33; }
.prov td { text-align: left; font-family: monospace; font-size: 0.85em; word-break: break-all; }
</style>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
{{ style | safe }}</head><body>
<h1>{{ title }}</h1>
<div class="verdict {{ 'unknown' if verdict.ok is none else ('ok' if verdict.ok else 'bad') }}">
<strong>Verdict:</strong> {{ verdict.text }}</div>

<h2>Accuracy</h2>
{% if accuracy %}<p class="note">{{ eval_info }}</p>
<table><tr><th>metric [95 % interval]</th><th>FP32</th><th>INT8</th><th>change (points, 95 % paired)</th></tr>
{% for r in accuracy %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">Not measured.</p>{% endif %}
{% if harm %}<h2>Per-class harm</h2>
<p class="note">{{ harm.summary }}</p>
{% if harm.rows %}<table><tr><th>class (most hurt first)</th><th>{{ harm.n_label }}</th><th>{{ harm.metric }} FP32 → INT8</th><th>change (points)</th><th>95 % paired</th><th>{{ 'lost / gained' if harm.metric == 'top-1' else '' }}</th></tr>
{% for r in harm.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">No class lost {{ 'an image' if harm.metric == 'top-1' else 'AP' }}.</p>{% endif %}
<p class="note">{{ harm.ranking }}</p>
{% if harm.disagreements %}<p class="note">{{ harm.disagreements }}</p>{% endif %}
{% if harm.thumbs %}<div class="thumbs">{% for t in harm.thumbs %}<figure title="{{ t.path }}"><img src="{{ t.uri }}" alt="{{ t.path }}">
<figcaption{% if t.hurt %} class="hurt"{% endif %}>FP32 {{ t.fp32 }}<br>INT8 {{ t.int8 }}<br>true {{ t.truth }}</figcaption></figure>{% endfor %}</div>{% endif %}
{% if harm.groups %}<h3>Per group</h3><p class="note">{{ harm.groups_note }}</p>
<table><tr><th>attribute = value</th><th>n</th><th>top-1 FP32 → INT8</th><th>change (points)</th><th>95 % paired</th><th>lost / gained</th></tr>
{% for r in harm.groups %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% endif %}
{% if notes %}<h3>Also measured in this run</h3>
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}

<h2>Latency</h2>
{% if latency %}<p class="note">{{ bench_info }}</p>
<table><tr><th>model</th><th>median ms</th><th>p90 ms</th><th>speed vs FP32</th><th>size</th><th>energy / inference</th></tr>
{% for r in latency %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">Not measured.</p>{% endif %}
{% if tradeoff %}<h3>Accuracy vs latency</h3>{{ tradeoff | safe }}{% endif %}
{% if quantize and quantize.tuning %}<p class="note">{{ quantize.tuning.message }}</p>
<table><tr><th>#</th><th>trial</th><th>{{ quantize.tuning.metric }}</th><th>drop</th><th>ms</th></tr>
{% for t in quantize.tuning.trials %}<tr><td>{{ loop.index0 }}</td><td>{{ t.name }}</td>
<td>{{ '%.2f' % (100 * t.metric) }}</td><td>{{ '%.2f' % t.drop }}{{ ' ± %.2f' % t.drop_ci95 if t.drop_ci95 is not none else '' }}</td><td>{{ '%.2f' % t.latency_ms if t.latency_ms else '—' }}</td></tr>{% endfor %}</table>{% endif %}

<h2>Sensitivity</h2>
{% if sensitivity %}<p class="note">Model output SQNR gained when only this layer stays float
(most sensitive first), on {{ sensitivity_info }}; SQNR: the error accumulated at the
layer's output. Layers whose
ONNX names the exporter generated are named by op, position in the graph and shape
(Conv #12 3×3 32→64: the 12th Conv, 3×3 kernel, 32 channels in, 64 out); plans,
--keep-float and --layer-bits take the ONNX node name.</p>
{{ sensitivity_chart | safe }}
<table><tr><th>layer</th><th>ONNX node</th><th>weight bits</th><th>SQNR dB</th><th>gain dB</th></tr>
{% for r in sensitivity %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">{{ missing.sensitivity }}</p>{% endif %}

<h2>Activation ranges</h2>
{% if histograms %}<p class="note">Float values reaching the most sensitive layers (log scale);
dashed: the range the INT8 grid covers.</p><div class="grid">{% for h in histograms %}{{ h | safe }}{% endfor %}</div>
{% else %}<p class="note">{{ missing.ranges }}</p>{% endif %}

<h2>Robustness</h2>
{% if robustness %}<p class="note">{{ robustness_summary }}</p>{{ robustness_chart | safe }}
<table><tr><th>corruption</th><th>severity</th><th>FP32</th><th>INT8</th><th>gap (points)</th><th>gap 95 % (points)</th><th>agreement</th></tr>
{% for r in robustness %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p class="note">{{ missing.robustness }}</p>{% endif %}
{% if shift_check %}<h3>Shift check</h3><p class="note">{{ shift_note }}</p>
<table><tr><th>shift</th><th>agreement</th><th>95 % (joint)</th><th>output SQNR dB</th><th></th></tr>
{% for r in shift_check %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% if adversarial %}<h3>Adversarial attacks</h3><p class="note">L-infinity attacks on [0, 1]
pixels; success: share of the images a model classified correctly that it gets wrong.
{{ adversarial_summary }}</p>
<table><tr><th>attack</th><th>crafted on</th><th>eps</th><th>FP32 fooled</th><th>INT8 fooled</th></tr>
{% for r in adversarial %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}

<h2>Data checks</h2>
{% if data %}<table>{% for r in data %}<tr><td>{{ r[0] }}</td><td>{{ r[1] }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">Not run.</p>{% endif %}

<h2>Provenance</h2>
{% if provenance %}<table class="prov">{% for r in provenance %}<tr><td>{{ r[0] }}</td><td>{{ r[1] }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">No manifest.</p>{% endif %}
<p class="note">Written by qvision. Every figure on this page was measured in this run, except
energy marked "estimate".</p>
</body></html>
"""

MONITOR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
{{ style | safe }}</head><body>
<h1>{{ title }}</h1>
<div class="verdict {{ 'bad' if alerts else 'ok' }}"><strong>{{ headline }}</strong></div>
<p class="note">{{ info }}</p>

<h2>The window</h2>
<table><tr><th>measure</th><th>now</th><th>alert when</th></tr>
{% for r in window %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>

<h2>Alerts</h2>
{% if alerts %}<table><tr><th>at image</th><th>kind</th><th>message</th></tr>
{% for a in alerts %}<tr><td>{{ a.at_image }}</td><td>{{ a.kind }}</td><td style="text-align:left">{{ a.message }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">None.</p>{% endif %}

<h2>Over the stream</h2>
{% if chart %}{{ chart | safe }}{% else %}<p class="note">Not enough images yet.</p>{% endif %}

<h2>Most saturated grids</h2>
<p class="note">Share of the values reaching each activation quantizer that fall outside its INT8 range, over the window, beside the same share on the calibration images.</p>
<table><tr><th>tensor</th><th>window</th><th>calibration</th></tr>
{% for r in grids %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if skipped %}<h2>Unreadable images</h2><ul>{% for s in skipped %}<li>{{ s.path }}: {{ s.reason }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""
