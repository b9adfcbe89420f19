"""Tables (rich) and the target checks."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=160)


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def ratios(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """minigate / baseline, per database (for times and CPU: baseline / minigate, so > 1 means minigate wins)."""
    out: dict[str, dict[str, Any]] = {}
    for db, systems in runs.items():
        mg, bl = systems.get("minigate", {}), systems.get("baseline", {})
        r: dict[str, Any] = {}
        if "checkout" in mg and "checkout" in bl:
            a, b = mg["checkout"], bl["checkout"]
            r["checkout_throughput_x"] = _ratio(a["throughput_per_s"], b["throughput_per_s"])
            r["checkout_p99_baseline_over_minigate"] = _ratio(b["latency"]["p99_ms"], a["latency"]["p99_ms"])
            r["checkout_cpu_per_order_baseline_over_minigate"] = _ratio(b["system_cpu_ms_per_order"],
                                                                        a["system_cpu_ms_per_order"])
        if "notify_storm" in mg and "notify_storm" in bl:
            a, b = mg["notify_storm"], bl["notify_storm"]
            r["notify_throughput_x"] = _ratio(a["throughput_per_s"], b["throughput_per_s"])
            r["notify_cpu_baseline_over_minigate"] = _ratio(b["system_cpu_ms_per_notification"],
                                                            a["system_cpu_ms_per_notification"])
        if "replay" in mg and "replay" in bl:
            a, b = mg["replay"], bl["replay"]
            r["replay_throughput_x"] = _ratio(a["throughput_per_s"], b["throughput_per_s"])
            r["replay_hit_p99_baseline_over_minigate"] = _ratio(b["latency_hits"]["p99_ms"],
                                                                a["latency_hits"]["p99_ms"])
        if "sms" in mg and "sms" in bl:
            a, b = mg["sms"], bl["sms"]
            r["sms_send_throughput_x"] = _ratio(a["send"]["per_second"], b["send"]["per_second"])
            r["sms_check_throughput_x"] = _ratio(a["check"]["per_second"], b["check"]["per_second"])
            r["sms_send_p99_baseline_over_minigate"] = _ratio(b["send"]["latency"]["p99_ms"],
                                                              a["send"]["latency"]["p99_ms"])
            r["sms_cpu_per_code_baseline_over_minigate"] = _ratio(b["system_cpu_ms_per_code"],
                                                                  a["system_cpu_ms_per_code"])
        if "ingest" in mg and "ingest" in bl:
            base = {row["batch"]: row for row in bl["ingest"]["runs"]}
            r["ingest"] = {}
            for row in mg["ingest"]["runs"]:
                other = base.get(row["batch"])
                if other is None:
                    continue
                r["ingest"][str(row["batch"])] = {
                    "throughput_x": _ratio(row["acked_events_per_s"], other["acked_events_per_s"]),
                    "p99_baseline_over_minigate": _ratio(other["latency"]["p99_ms"], row["latency"]["p99_ms"]),
                    "cpu_baseline_over_minigate": _ratio(other.get("system_cpu_ms_per_1000_events"),
                                                         row.get("system_cpu_ms_per_1000_events"))}
        out[db] = r
    return out


def targets(runs: dict[str, Any], rat: dict[str, Any], limit: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(db: str, name: str, goal: str, measured: float | None, ok: bool | None, note: str = "") -> None:
        rows.append({"db": db, "target": name, "goal": goal, "measured": measured, "met": ok, "note": note})

    for db, systems in runs.items():
        mg = systems.get("minigate", {})
        r = rat.get(db, {})
        if r.get("checkout_throughput_x") is not None:
            x = r["checkout_throughput_x"]
            add(db, "checkout throughput vs baseline", ">= 3.0x", x, x >= 3, f"{x / 3:.2f} of the goal")
        if "checkout" in mg and limit and db in limit.get("per_order", {}):
            multiple = round(mg["checkout"]["system_cpu_ms_per_order"] / limit["per_order"][db]["cpu_ms"], 2)
            mg["checkout"]["cpu_multiple_of_limit"] = multiple
            add(db, "gateway CPU/order vs irreducible", "<= 2.0x", multiple, multiple <= 2,
                f"{mg['checkout']['system_cpu_ms_per_order']:.2f} ms vs {limit['per_order'][db]['cpu_ms']:.2f} ms")
        if "notify_storm" in mg:
            s = mg["notify_storm"]
            done = s.get("all_webhooks_s") or s["all_paid_s"]
            tput = round(s["notifications"] / done, 1) if done else None
            add(db, "notifications to completion (paid + webhook)", ">= 1500/s", tput,
                tput is not None and tput >= 1500 and s["complete"],
                f"paid at {s['throughput_per_s']}/s; {(tput or 0) / 1500:.2f} of the goal")
        for paced in mg.get("notify_paced", []):
            if paced.get("offered_rate_per_s") == 1500:
                p99 = paced["latency"]["p99_ms"]
                add(db, "notification p99 at 1500/s offered", "< 50 ms", p99, p99 is not None and p99 < 50,
                    f"completed at {paced['throughput_per_s']}/s")
        if "notify_paced" in mg:
            low = [p for p in mg["notify_paced"] if p.get("offered_rate_per_s") != 1500]
            for paced in low:
                p99 = paced["latency"]["p99_ms"]
                add(db, f"notification p99 at {paced['offered_rate_per_s']:g}/s offered (info)", "< 50 ms", p99,
                    p99 is not None and p99 < 50)
        if "replay" in mg:
            p99 = mg["replay"]["latency_hits"]["p99_ms"]
            add(db, "idempotent replay (hit) p99", "< 5 ms", p99, p99 is not None and p99 < 5)
        if r.get("sms_send_throughput_x") is not None:
            add(db, "SMS codes sent vs baseline (info)", "-", r["sms_send_throughput_x"], None,
                f"checked {r['sms_check_throughput_x']}x; CPU/code baseline ÷ minigate "
                f"{r['sms_cpu_per_code_baseline_over_minigate']}x")
        if "sms" in mg and limit and db in limit.get("per_code", {}):
            per_code = limit["per_code"][db]["cpu_ms"]
            for system in systems.values():
                if "sms" in system:
                    system["sms"]["cpu_multiple_of_limit"] = round(system["sms"]["system_cpu_ms_per_code"] / per_code,
                                                                   1)
            multiple = mg["sms"]["cpu_multiple_of_limit"]
            add(db, "gateway CPU/code vs irreducible (info)", "-", multiple, None,
                f"{mg['sms']['system_cpu_ms_per_code']:.2f} ms vs {per_code:.3f} ms (commit + ACS3 signature)")
        for row in mg.get("ingest", {}).get("runs", []):
            rate = row["acked_events_per_s"]
            x = r.get("ingest", {}).get(str(row["batch"]), {}).get("throughput_x")
            add(db, f"analytics events/s acknowledged durably, batch {row['batch']}", ">= 50000/s", rate,
                rate >= 50_000 and not row["errors"],
                f"{row['ratio_to_goal']} of the goal" + (f"; {x}x the baseline" if x is not None else ""))
    return rows


def print_run(results: dict[str, Any]) -> None:
    runs = results.get("runs", {})
    limit = results.get("limit")
    if limit:
        t = Table(title="The limit: irreducible cost per operation (in-process, single-threaded, this machine)")
        for col in ("operation", "CPU ms", "wall ms", "per second"):
            t.add_column(col, justify="right" if col != "operation" else "left")
        t.add_row("RSA-2048 sign", _f(limit["rsa2048_sign"]["cpu_ms"], 3), _f(limit["rsa2048_sign"]["wall_ms"], 3),
                  _f(limit["rsa2048_sign"]["per_s"]))
        t.add_row("RSA-2048 verify", _f(limit["rsa2048_verify"]["cpu_ms"], 3),
                  _f(limit["rsa2048_verify"]["wall_ms"], 3), _f(limit["rsa2048_verify"]["per_s"]))
        for db, c in limit["commit"].items():
            t.add_row(f"durable commit ({db})", _f(c["cpu_ms"], 3), _f(c["wall_ms"], 3), _f(c["per_s"]))
        if "acs3_sign" in limit:
            t.add_row("ACS3-HMAC-SHA256 signature (SendSms)", _f(limit["acs3_sign"]["cpu_ms"], 3),
                      _f(limit["acs3_sign"]["wall_ms"], 3), _f(limit["acs3_sign"]["per_s"]))
        for db, p in limit["per_order"].items():
            t.add_row(f"[b]per order: 2 sign + verify + commit ({db})[/b]", _f(p["cpu_ms"], 3), _f(p["wall_ms"], 3),
                      _f(round(1000 / p["cpu_ms"])) + " (CPU-bound, 1 core)")
        for db, p in limit.get("per_code", {}).items():
            t.add_row(f"[b]per SMS code: commit + ACS3 signature ({db})[/b]", _f(p["cpu_ms"], 3),
                      _f(p["wall_ms"], 3), _f(round(1000 / p["cpu_ms"])) + " (CPU-bound, 1 core)")
        console.print(t)
    rat = results.get("ratios", {})
    if any("checkout" in s for d in runs.values() for s in d.values()):
        t = Table(title="(a) Checkout: concurrent clients create WeChat mini-program orders over HTTP")
        for col in ("db", "system", "orders", "conc.", "orders/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/order",
                    "x limit", "system cores", "sandbox cores", "driver cores", "errors"):
            t.add_column(col, justify="right")
        for db, systems in runs.items():
            for name, s in systems.items():
                c = s.get("checkout")
                if not c:
                    continue
                t.add_row(db, name, _f(c["orders"]), _f(c["concurrency"]), _f(c["throughput_per_s"]),
                          _f(c["latency"]["p50_ms"]), _f(c["latency"]["p95_ms"]), _f(c["latency"]["p99_ms"]),
                          _f(c["system_cpu_ms_per_order"], 2), _f(c.get("cpu_multiple_of_limit"), 2),
                          _f(c["cores_busy"]["system"], 2), _f(c["cores_busy"]["sandbox"], 2),
                          _f(c["cores_busy"]["driver"], 2), _f(c["errors"]["count"]))
            r = rat.get(db, {})
            if r.get("checkout_throughput_x") is not None:
                t.add_row(db, "[b]ratio[/b]", "", "", f"[b]{r['checkout_throughput_x']}x[/b]", "", "",
                          f"{r['checkout_p99_baseline_over_minigate']}x", "", "", "", "", "", "")
        console.print(t)
    if any("notify_storm" in s for d in runs.values() for s in d.values()):
        t = Table(title="(b) Notification storm: the simulator pays every order and fires signed, encrypted callbacks")
        for col in ("db", "system", "mode", "n", "all paid s", "paid/s", "all webhooks s", "webhooks/s",
                    "ack p50 ms", "ack p95 ms", "ack p99 ms", "CPU ms/notif.", "system cores", "errors"):
            t.add_column(col, justify="right")
        for db, systems in runs.items():
            for name, s in systems.items():
                for n in ([s["notify_storm"]] if "notify_storm" in s else []) + s.get("notify_paced", []):
                    t.add_row(db, name, n["mode"], _f(n["notifications"]), _f(n["all_paid_s"], 2),
                              _f(n["throughput_per_s"]), _f(n.get("all_webhooks_s"), 2),
                              _f(n.get("webhook_throughput_per_s")), _f(n["latency"]["p50_ms"]),
                              _f(n["latency"]["p95_ms"]), _f(n["latency"]["p99_ms"]),
                              _f(n["system_cpu_ms_per_notification"], 2), _f(n["cores_busy"]["system"], 2),
                              _f(n["errors"]["count"] + n["pay_errors"]["count"]))
            r = rat.get(db, {})
            if r.get("notify_throughput_x") is not None:
                t.add_row(db, "[b]ratio[/b]", "storm", "", "", f"[b]{r['notify_throughput_x']}x[/b]", "", "", "",
                          "", "", f"{r['notify_cpu_baseline_over_minigate']}x", "", "")
        console.print(t)
    if any("replay" in s for d in runs.values() for s in d.values()):
        t = Table(title="(c) Idempotent replay: repeated Idempotency-Keys")
        for col in ("db", "system", "requests", "hit ratio", "req/s", "hit p50 ms", "hit p95 ms", "hit p99 ms",
                    "miss p99 ms", "CPU ms/req", "errors", "wrong replays"):
            t.add_column(col, justify="right")
        for db, systems in runs.items():
            for name, s in systems.items():
                c = s.get("replay")
                if not c:
                    continue
                t.add_row(db, name, _f(c["requests"]), _f(c["hit_ratio"], 2), _f(c["throughput_per_s"]),
                          _f(c["latency_hits"]["p50_ms"], 2), _f(c["latency_hits"]["p95_ms"], 2),
                          _f(c["latency_hits"]["p99_ms"], 2), _f(c["latency_misses"]["p99_ms"]),
                          _f(c["system_cpu_ms_per_request"], 2), _f(c["errors"]["count"]),
                          _f(c["replay_mismatches"]))
            r = rat.get(db, {})
            if r.get("replay_throughput_x") is not None:
                t.add_row(db, "[b]ratio[/b]", "", "", f"[b]{r['replay_throughput_x']}x[/b]", "", "",
                          f"{r['replay_hit_p99_baseline_over_minigate']}x", "", "", "", "")
        console.print(t)
    if any("sms" in s for d in runs.values() for s in d.values()):
        _print_sms(runs, rat)
    if any("ingest" in s for d in runs.values() for s in d.values()):
        _print_ingest(runs, rat)
    rows = results.get("targets", [])
    if rows:
        t = Table(title="Targets (minigate)")
        for col in ("db", "target", "goal", "measured", "met", "note"):
            t.add_column(col)
        for row in rows:
            met = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "-"}[row["met"]]
            t.add_row(row["db"], row["target"], row["goal"], _f(row["measured"], 2), met, row["note"])
        console.print(t)


def _print_sms(runs: dict[str, Any], rat: dict[str, Any]) -> None:
    t = Table(title="(d) SMS verification codes: send (ACS3-signed SendSms to the simulator), read from the phone, "
                    "check; then a refused resend (16 clients)")
    for col in ("db", "system", "codes", "sends/s", "send p50 ms", "send p99 ms", "checks/s",
                "check p50 ms", "check p99 ms", "refused/s", "refusal p99 ms", "CPU ms/code", "x limit",
                "errors"):
        t.add_column(col, justify="right")
    for db, systems in runs.items():
        for name, s in systems.items():
            c = s.get("sms")
            if not c:
                continue
            t.add_row(db, name, _f(c["codes"]), _f(c["send"]["per_second"]),
                      _f(c["send"]["latency"]["p50_ms"]), _f(c["send"]["latency"]["p99_ms"]),
                      _f(c["check"]["per_second"]), _f(c["check"]["latency"]["p50_ms"]),
                      _f(c["check"]["latency"]["p99_ms"]), _f(c["refusal"]["per_second"]),
                      _f(c["refusal"]["latency"]["p99_ms"]), _f(c["system_cpu_ms_per_code"], 2),
                      _f(c.get("cpu_multiple_of_limit"), 1), _f(c["errors"]))
        r = rat.get(db, {})
        if r.get("sms_send_throughput_x") is not None:
            t.add_row(db, "[b]ratio[/b]", "", f"[b]{r['sms_send_throughput_x']}x[/b]", "",
                      f"{r['sms_send_p99_baseline_over_minigate']}x", f"[b]{r['sms_check_throughput_x']}x[/b]", "",
                      "", "", "", f"{r['sms_cpu_per_code_baseline_over_minigate']}x", "", "")
    console.print(t)


def _print_ingest(runs: dict[str, Any], rat: dict[str, Any]) -> None:
    t = Table(title="(e) Analytics ingest: batches of events, each answer after a durable commit (goal: 50,000 "
                    "events/s)")
    for col in ("db", "system", "batch", "requests", "events/s acked", "x goal", "p50 ms", "p99 ms",
                "all queryable s", "CPU ms/1k events", "errors"):
        t.add_column(col, justify="right")
    for db, systems in runs.items():
        for name, s in systems.items():
            for row in s.get("ingest", {}).get("runs", []):
                t.add_row(db, name, _f(row["batch"]), _f(row["requests"]), _f(row["acked_events_per_s"]),
                          _f(row["ratio_to_goal"], 3), _f(row["latency"]["p50_ms"]), _f(row["latency"]["p99_ms"]),
                          _f(row["all_queryable_after_s"], 2), _f(row.get("system_cpu_ms_per_1000_events"), 1),
                          _f(row["errors"]))
        for batch, x in rat.get(db, {}).get("ingest", {}).items():
            t.add_row(db, "[b]ratio[/b]", batch, "", f"[b]{x['throughput_x']}x[/b]", "", "",
                      f"{x['p99_baseline_over_minigate']}x", "", f"{x['cpu_baseline_over_minigate']}x", "")
    console.print(t)
