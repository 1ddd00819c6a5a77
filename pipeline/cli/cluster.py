"""``emoray submit|status|logs|stop``: the ``run`` job on a Ray cluster, through the Ray Jobs API.

``submit`` takes every option of ``run`` (the same click parameters, so they are validated here,
before anything reaches the cluster) and forwards them to ``emoray run`` on the cluster.
"""

from __future__ import annotations

import json
import sys
import time

import click

from jobs.submit import DEFAULT_DASHBOARD, ClusterError, ClusterJobs, JobState, cluster_path
from models.errors import EmorayError
from pipeline.cli.options import EXIT_FAILED, EXIT_OK, exits_on_error

NOT_FORWARDED = ("address",)  # the driver on the cluster joins the cluster it runs on


def jobs_address_option(function):
    """``--address`` of the cluster's Jobs API (its dashboard), shared by submit, status, logs and stop."""
    return click.option(
        "--address", envvar="RAY_API_SERVER_ADDRESS", default=DEFAULT_DASHBOARD, show_default=True,
        help="The cluster's dashboard (Jobs API), e.g. http://head:8265. Env: RAY_API_SERVER_ADDRESS. "
             "Token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, picked up without RAY_AUTH_MODE.",
    )(function)


def _env_pair(context, parameter, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, but got {value!r}", param_hint="--env")
        pairs[name] = text
    return pairs


def run_arguments(parameters: list[click.Parameter], values: dict) -> list[str]:
    """The command line of ``emoray run`` that gives these parsed values (defaults left out).

    Options come first, then ``--`` and the positional arguments, so no input path is read as an
    option. Paths (click.Path parameters) are made as the cluster sees them: URIs as given, local
    paths absolute.
    """
    options: list[str] = []
    positional: list[str] = []
    for parameter in parameters:
        value = values.get(parameter.name)
        is_path = isinstance(parameter.type, click.Path)
        if isinstance(parameter, click.Argument):
            items = value if parameter.nargs != 1 else [value]
            positional += [cluster_path(v) if is_path else str(v) for v in items]
            continue
        name = max(parameter.opts, key=len)
        if parameter.is_flag:
            if parameter.secondary_opts and value != parameter.default:
                options.append(name if value else max(parameter.secondary_opts, key=len))
            elif value and not parameter.secondary_opts:
                options.append(name)
            continue
        if value == parameter.default or (value is None and parameter.default is None):
            continue  # None is a value of its own where the default is not (--det-size native)
        for item in (value if parameter.multiple else [value]):
            options += [name, cluster_path(str(item)) if is_path else str(item)]
    return [*options, "--", *positional]


def _submit_command(run: click.Command) -> click.Command:
    forwarded = [p for p in run.params if p.name not in NOT_FORWARDED]

    @click.command("submit")
    @jobs_address_option
    @click.option("--wait", is_flag=True, help="Follow the job's output to its end; exit with its status.")
    @click.option("--job-id", default=None, help="The job's id (Ray's submission id; default: a new one). Must be unused.")
    @click.option("--env", "env_vars", multiple=True, callback=_env_pair, metavar="NAME=VALUE",
                  help="Environment variable for the job (repeatable), e.g. EMORAY_HOME=/shared/emoray or AWS_REGION=us-east-1.")
    @click.option("--python", "python", envvar="EMORAY_CLUSTER_PYTHON", default="python", show_default=True,
                  help="The interpreter to run emoray with on the head node (found on its PATH). Env: EMORAY_CLUSTER_PYTHON.")
    @exits_on_error
    def submit(address, wait, job_id, env_vars, python, **values):
        """Submit the same job as ``emoray run`` to a Ray cluster; print its job id.

        Takes every option of ``emoray run``. PATHS and -o OUT are as the cluster sees them: shared
        or local paths on the cluster (relative ones are made absolute here), or object-store URIs
        (s3://, gs://, file://). The project's code travels with the job; the cluster needs emoray's
        dependencies (see infra/). Resubmitting the same command resumes: complete videos are skipped.

        Exit codes: 0 when submitted (with --wait: when the job succeeded), 1 when the submission or
        the job failed, 2 for bad arguments.

        \b
        Examples:
          emoray submit /shared/recordings -o /shared/results --address http://head:8265
          emoray submit s3://bucket/videos -o s3://bucket/results --fps 5 --wait
          emoray submit /data/in -o /data/out --env EMORAY_HOME=/data/emoray-cache
        Then: emoray status JOB; emoray logs JOB --follow; emoray stop JOB
        """
        arguments = run_arguments(forwarded, values)
        metadata = {"emoray_output": cluster_path(values["output"]), "emoray_inputs": json.dumps(
            [cluster_path(p) for p in values["paths"]])}
        jobs = ClusterJobs(address)
        job = jobs.submit(arguments, python=python, env_vars=env_vars, job_id=job_id, metadata=metadata)
        click.echo(job)
        if not wait:
            click.echo(f"submitted; follow it with: emoray logs {job} --follow --address {jobs.address}", err=True)
            sys.exit(EXIT_OK)
        sys.exit(_follow_to_end(jobs, job))

    submit.params = forwarded + submit.params
    return submit


def _follow_to_end(jobs: ClusterJobs, job: str) -> int:
    """Print the job's output until it ends; returns the exit code for its final status."""
    try:
        try:
            for chunk in jobs.follow(job):
                click.echo(chunk, nl=False)
        except ClusterError as error:  # the stream can drop (a restarted dashboard): polling still works
            click.echo(f"emoray: {error}; waiting for the job to end", err=True)
        state = jobs.wait(job)
    except EmorayError as error:
        click.echo(f"emoray: {error}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        click.echo(f"\nthe job keeps running; stop it with: emoray stop {job} --address {jobs.address}", err=True)
        return EXIT_FAILED
    click.echo(f"job {job}: {state.status}" + (f" ({state.message})" if state.status != "SUCCEEDED" and state.message else ""),
               err=True)
    return state.cli_exit_code


@click.command()
@click.argument("job")
@jobs_address_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@exits_on_error
def status(job, address, as_json):
    """Show a submitted job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED.

    Exit codes: 0 when the job is pending, running or succeeded; 1 when it failed, was stopped, or
    is unknown.

    \b
    Examples:
      emoray status raysubmit_AbC123 --address http://head:8265
      emoray status raysubmit_AbC123 --json
    """
    state = ClusterJobs(address).state(job)
    if as_json:
        click.echo(json.dumps(_state_dict(state), indent=2))
    else:
        for name, value in _state_dict(state).items():
            if value not in (None, "", {}):
                click.echo(f"{name + ':':<12} {value}")
    sys.exit(EXIT_FAILED if state.status in ("FAILED", "STOPPED") else EXIT_OK)


def _state_dict(state: JobState) -> dict:
    def when(seconds):
        return None if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

    took = (state.end_time or time.time()) - state.start_time if state.start_time else None
    return {"job": state.job_id, "status": state.status, "message": state.message, "ray_job_id": state.ray_job_id,
            "output": state.metadata.get("emoray_output"), "started": when(state.start_time),
            "ended": when(state.end_time), "seconds": None if took is None else round(took, 1),
            "exit_code": state.exit_code, "entrypoint": state.entrypoint}


@click.command()
@click.argument("job")
@jobs_address_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends; exit with its status.")
@exits_on_error
def logs(job, address, follow):
    """Print a submitted job's output (the driver's: progress, the summary table, errors).

    \b
    Examples:
      emoray logs raysubmit_AbC123 --address http://head:8265
      emoray logs raysubmit_AbC123 --follow
    """
    jobs = ClusterJobs(address)
    if not follow:
        click.echo(jobs.logs(job), nl=False)
        sys.exit(EXIT_OK)
    jobs.state(job)  # an unknown job is an error here, not an empty stream
    sys.exit(_follow_to_end(jobs, job))


@click.command()
@click.argument("job")
@jobs_address_option
@click.option("--no-wait", is_flag=True, help="Return at once instead of waiting for the job to end.")
@exits_on_error
def stop(job, address, no_wait):
    """Stop a submitted job: its driver gets SIGTERM, then SIGKILL; its tasks and actors end with it.

    Videos already complete stay complete; submit the same command again to finish the rest.

    \b
    Examples:
      emoray stop raysubmit_AbC123 --address http://head:8265
    """
    jobs = ClusterJobs(address)
    stopped = jobs.stop(job)
    state = jobs.state(job) if no_wait else jobs.wait(job, poll_seconds=0.5)
    click.echo(f"job {job}: {state.status}" + ("" if stopped else " (it was not running)"))
    sys.exit(EXIT_OK)


def register(main: click.Group) -> None:
    """Add submit, status, logs and stop to the ``emoray`` group (``submit`` copies ``run``'s options)."""
    main.add_command(_submit_command(main.commands["run"]))
    for command in (status, logs, stop):
        main.add_command(command)
