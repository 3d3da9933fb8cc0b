"""The scheduled deployments, registered through the Prefect API (test harness server)."""

import pytest

pytestmark = pytest.mark.slow


def test_nightly_deployment_has_its_cron_schedule(tmp_path):
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.serve import NIGHTLY, deployments

    with prefect_test_harness(server_startup_timeout=120):
        for deployment in deployments(tmp_path):
            deployment.apply()
        with get_client(sync_client=True) as client:
            nightly = client.read_deployment_by_name("bar-pipeline/nightly")
            upgrade = client.read_deployment_by_name("upgrade-expert/upgrade")
    assert [s.schedule.cron for s in nightly.schedules] == [NIGHTLY]
    assert nightly.parameters == {"root": str(tmp_path.resolve())}
    assert upgrade.schedules == []
