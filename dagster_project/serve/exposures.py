"""What people see, as the last assets of the graph: the dbt exposures (models/_exposures.yml).

The dashboards and the CSV export become asset specs that depend on the marts they read, so the
asset graph ends where stakeholders look. Nothing materializes them: Superset and `botflow export`
read the marts when asked. The two reports are Dagster assets already (serve/reports/assets.py);
their exposures name them in `meta.dagster_asset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from dagster_project.transform.assets import MANIFEST_JSON, TRANSLATOR, dbt_project

KINDS = {"dashboard": {"superset"}, "application": {"csv"}}


def exposure_deps(manifest: Mapping[str, Any], exposure: Mapping[str, Any]) -> list[dg.AssetKey]:
    """The asset keys of the models and sources an exposure depends on."""
    return sorted(TRANSLATOR.get_asset_spec(manifest, unique_id, dbt_project).key
                  for unique_id in exposure["depends_on"]["nodes"])


def exposure_specs(manifest: Mapping[str, Any]) -> list[dg.AssetSpec]:
    specs = []
    for exposure in sorted(manifest["exposures"].values(), key=lambda e: e["name"]):
        if exposure.get("meta", {}).get("dagster_asset"):
            continue  # a Dagster asset already
        specs.append(dg.AssetSpec(
            key=["exposures", exposure["name"]],
            description=f"{exposure['label']}. {exposure['description'].strip()}",
            deps=exposure_deps(manifest, exposure),
            group_name="exposures",
            kinds=KINDS.get(exposure["type"], set()),
            metadata={"url": dg.MetadataValue.url(exposure["url"])} if exposure.get("url") else None,
            owners=[exposure["owner"]["email"]],
        ))
    return specs


EXPOSURES = exposure_specs(MANIFEST_JSON)
