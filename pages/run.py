"""Run: the complete record of one run, finished or not: state or error, AE and DDPM loss curves,
warnings, stage timings, the full configuration and the whole log. Live while the run is going."""
from studio import ui

ui.header("Run")
ui.run_record(ui.need_run())
