"""The embedded AWS: a LOCAL SIMULATION (moto_server on loopback), never real AWS.

``selfheal dev`` starts it so the quick start can heal something on any machine, and the
tests drive the AWS executors against it. It speaks the AWS wire protocols, accepts any
credentials, and acts on nothing real. What it does not model (moto 5): ECS keeps the
service's first deployment after an update, Auto Scaling records no activities, CloudWatch
keeps no alarm history, and SSM ``SendCommand`` runs nothing.

``seed_demo_world`` builds the demo whitelist's world in it, in its broken state: the
checkout service on a bad revision (7, with 6 pinned as known good), the queue-workers
Auto Scaling group, three batch instances, and the payments webhook's ``live`` alias on a
bad version (3, with 2 pinned).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

DEMO_REGION = "eu-west-1"
DEMO_ACCOUNT = "123456789012"  # moto's default account
DEMO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "selfheal-dev-simulation", "AWS_SECRET_ACCESS_KEY": "selfheal-dev-simulation"}
# ECS services in the simulation report this many running tasks, so a deployment can
# reach the COMPLETED rollout state that verification waits for.
DEMO_RUNNING_TASKS = 2


def moto_binary() -> Path | None:
    scripts = Path(sysconfig.get_path("scripts")) / "moto_server"
    if scripts.exists():
        return scripts
    found = shutil.which("moto_server")
    return Path(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    """``moto_server`` as a child process on loopback, stopped by its own pid."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 30.0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MotoServer":
        binary = moto_binary()
        if binary is None:
            raise FileNotFoundError("moto_server not found: install selfheal with its demo extra (pip install -e '.[demo]')")
        self.port = self.port or free_port(self.host)
        env = {**os.environ, "MOTO_ECS_SERVICE_RUNNING": str(DEMO_RUNNING_TASKS), **self.env}
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([str(binary), "-H", self.host, "-p", str(self.port)], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if self.log_path:
                out.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/moto-api/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"moto_server did not answer on {self.url} within {self.start_timeout}s")
            time.sleep(0.1)

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def session(endpoint_url: str, region: str = DEMO_REGION):
    """boto3 clients for the simulation (its credentials are placeholders)."""
    import boto3

    s = boto3.session.Session(aws_access_key_id=DEMO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=DEMO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=region)
    return lambda service: s.client(service, endpoint_url=endpoint_url)


def _zip(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", source)
    return buf.getvalue()


# One of moto's built-in images (Amazon Linux, every region). Named rather than looked up:
# after a reset, moto's first DescribeImages loads its whole catalogue (about a second),
# and the tests seed a fresh world hundreds of times.
DEMO_IMAGE = "ami-760aaa0f"


def seed_demo_world(endpoint_url: str, region: str = DEMO_REGION) -> dict[str, object]:
    """Create the demo whitelist's resources, broken the way the sample alerts describe."""
    client = session(endpoint_url, region)
    ecs, ec2, asg, lam, iam = (client(s) for s in ("ecs", "ec2", "autoscaling", "lambda", "iam"))

    ecs.create_cluster(clusterName="demo")
    for revision in range(1, 8):  # 6 passed canary; 7 is the bad deploy
        ecs.register_task_definition(family="checkout", containerDefinitions=[
            {"name": "checkout", "image": f"demo/checkout:1.{revision}", "memory": 128, "essential": True}])
    ecs.create_service(cluster="demo", serviceName="checkout", taskDefinition="checkout:7", desiredCount=DEMO_RUNNING_TASKS)

    image = DEMO_IMAGE
    ec2.create_launch_template(LaunchTemplateName="demo-queue-workers",
                               LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName="demo-queue-workers", MinSize=2, MaxSize=8, DesiredCapacity=2,
                                  LaunchTemplate={"LaunchTemplateName": "demo-queue-workers"},
                                  AvailabilityZones=[f"{region}a"])

    tags = [{"Key": "Role", "Value": "batch"}, {"Key": "Env", "Value": "demo"}]
    batch = ec2.run_instances(ImageId=image, MinCount=3, MaxCount=3, InstanceType="t3.micro",
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    batch_ids = sorted(i["InstanceId"] for i in batch["Instances"])

    role = iam.create_role(RoleName="payments-webhook", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(FunctionName="payments-webhook", Runtime="python3.12", Role=role, Handler="handler.handle",
                        Code={"ZipFile": _zip("def handle(event, context):\n    return 0\n")})
    for version in range(1, 4):  # 2 is the pinned good version; 3 is the bad release
        lam.update_function_code(FunctionName="payments-webhook",
                                 ZipFile=_zip(f"def handle(event, context):\n    return {version}\n"))
        lam.publish_version(FunctionName="payments-webhook")
    lam.create_alias(FunctionName="payments-webhook", Name="live", FunctionVersion="3")
    return {"region": region, "batch_instances": batch_ids}
