"""`c3ctl list [-al]`: GPU classes with prices and availability, or every profile."""

from __future__ import annotations

import json
from collections import defaultdict

import click
from rich.table import Table

from c3.v1 import coordinator_pb2
from c3ctl import render, session
from c3ctl.aio import run


def _price(minor: int) -> str:
    return f"£{minor / 100:.2f}/h"


@click.command("list")
@click.option("-a", "--all", "show_all", is_flag=True, help="Every concrete profile.")
@click.option("-l", "--long", "long_format", is_flag=True, help="With CPU, RAM and disk per GPU.")
@click.option("--json", "as_json", is_flag=True)
def list_hardware(show_all: bool, long_format: bool, as_json: bool) -> None:
    """GPU classes (or profiles with -a) with prices and availability."""

    async def go() -> list[coordinator_pb2.HardwareProfile]:
        async with session.coordinator() as s:
            reply = await s.stub.ListHardware(coordinator_pb2.ListHardwareRequest())
            return list(reply.profiles)

    profiles = run(go())
    if as_json:
        click.echo(json.dumps({"profiles": [{
            "code": p.code, "class": p.gpu_class, "gpu": p.gpu_name, "gpus": p.gpu_count,
            "vram_gb": p.vram_gb, "price_per_hour_minor": p.price_per_hour_minor,
            "cpu_per_gpu": p.cpu_per_gpu, "ram_gb_per_gpu": p.ram_gb_per_gpu,
            "disk_gb_per_gpu": p.disk_gb_per_gpu, "available": p.available} for p in profiles]}))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    if show_all:
        columns = ["PROFILE", "CLASS", "GPU", "GPUS", "VRAM", "PRICE", "AVAILABLE"]
        if long_format:
            columns[5:5] = ["CPU/GPU", "RAM/GPU", "DISK/GPU"]
        for column in columns:
            table.add_column(column)
        for p in profiles:
            row = [p.code, p.gpu_class, p.gpu_name, str(p.gpu_count), f"{p.vram_gb} GB",
                   _price(p.price_per_hour_minor), str(p.available)]
            if long_format:
                row[5:5] = [str(p.cpu_per_gpu), f"{p.ram_gb_per_gpu} GB", f"{p.disk_gb_per_gpu} GB"]
            table.add_row(*row)
    else:
        by_class: dict[str, list[coordinator_pb2.HardwareProfile]] = defaultdict(list)
        for p in profiles:
            by_class[p.gpu_class].append(p)
        for column in ("CLASS", "PROFILES", "PRICE", "AVAILABLE"):
            table.add_column(column)
        for cls, members in sorted(by_class.items()):
            prices = [m.price_per_hour_minor for m in members]
            span = _price(min(prices)) if min(prices) == max(prices) else f"{_price(min(prices))} - {_price(max(prices))}"
            table.add_row(cls, str(len(members)), span, str(sum(m.available for m in members)))
    render.out.print(table)



