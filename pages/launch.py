"""Launch: watch the runs that are going, and start a new one from a preset plus every option."""
import streamlit as st

from pdiff_core import jobs
from pdiff_core.config import PRESETS
from pdiff_core.data import DataError
from pdiff_core.prepare import layer_error, prepare
from studio import forms, ui


def reset_to_preset():
    for name, value in forms.preset_values(st.session_state["preset"]).items():
        st.session_state[f"opt_{name}"] = forms.form_value(name, value)
    clear_error()


def clear_error():
    st.session_state.pop("launch_error", None)


def values() -> dict:
    return {name: st.session_state[f"opt_{name}"] for name in forms.TYPES if f"opt_{name}" in st.session_state}


def launch():
    try:
        cfg = forms.build(st.session_state["preset"], values())
        prepare(cfg)                      # dataset files, layer names, device: every check the worker does
    except ValueError as e:
        st.session_state["launch_error"] = str(e)
        return
    clear_error()
    ui.start_run(cfg)


def store_upload():
    up = st.session_state.get("npz_upload")
    if up is None:
        return
    try:
        path = jobs.save_upload(up.name, up.getvalue())
    except DataError as e:
        st.session_state["upload_note"] = ("error", str(e))
        return
    st.session_state["opt_data_root"] = str(path)
    st.session_state["upload_note"] = ("success", f"{up.name} is valid; stored as {path}")
    clear_error()


def remember_in_url() -> None:
    """The preset and every changed value in the URL, so that a reload keeps the form."""
    preset, sets = st.session_state["preset"], forms.to_query(st.session_state["preset"], values())
    for key, value in (("preset", preset if preset != ui.DEMO_PRESET else None), ("set", sets or None)):
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif (st.query_params.get_all(key) if key == "set" else st.query_params.get(key)) != value:
            st.query_params[key] = value


def field(name: str, where, error: str | None, bad: str | None) -> None:
    """One option's widget, with its validation error right under it."""
    kind = forms.TYPES[name]
    common = dict(key=f"opt_{name}", help=forms.HELP.get(name), on_change=clear_error, persist_state="session")
    label = forms.label(name)
    if name in forms.CHOICES:
        where.selectbox(label, forms.CHOICES[name], **common)
    elif kind is bool:
        where.checkbox(label, **common)
    else:               # numbers too: forms.typed parses them, and refuses what it cannot parse
        where.text_input(label, **common)
    if bad == name:
        where.error(error, icon=":material/error:")


def grid(names: list[str], error, bad) -> None:
    """Four fields a row, each row its own columns: a message under one field lengthens its row only,
    so no field is pushed out of line with its row."""
    for start in range(0, len(names), 4):
        cols = st.columns(4)
        for col, name in zip(cols, names[start:start + 4]):
            field(name, col, error, bad)


ui.header("Launch")
ui.watch()
st.divider()
st.subheader("New run")
# A new session (a reload, a shared link) starts from the form the URL holds: ?preset=P&set=key=value...
if "preset" not in st.session_state:
    asked = st.query_params.get("preset")
    st.session_state["preset"] = asked if asked in PRESETS else ui.DEMO_PRESET
if "opt_k" not in st.session_state:
    reset_to_preset()
    for name, value in forms.from_query(st.query_params.get_all("set")).items():
        st.session_state[f"opt_{name}"] = forms.form_value(name, value)

# Checks as you type: every value, and the layer names against the model the dataset's input shape
# gives (no data loaded). The Launch button adds the dataset files and the device.
error = st.session_state.get("launch_error")
if error is None:
    try:
        error = layer_error(forms.build(st.session_state["preset"], values()))
    except ValueError as e:
        error = str(e)
bad = forms.field_of(error) if error else None

left, right = st.columns([3, 1])
left.selectbox("Preset", list(PRESETS), key="preset", format_func=forms.preset_label, on_change=reset_to_preset,
               persist_state="session")
field("seed", right, error, bad)
left.caption(ui.estimate_note(st.session_state["preset"], st.session_state.get("opt_device", "auto")),
             help="The median wall time, from start to done, of this preset's finished runs in the runs "
                  "directory that ran on the same device (CPU or GPU); changed options are not taken into account.")
grid(forms.MAIN, error, bad)
if st.session_state.get("opt_dataset") not in forms.BUILTIN_DATA:
    a, b = st.columns(2)
    field("data_root", a, error, bad)
    if st.session_state.get("opt_dataset") == "npz":
        b.file_uploader("or upload a .npz (X and y, or X_train, y_train, X_test and y_test); it is checked, "
                        "never unpickled", type=["npz"], key="npz_upload", on_change=store_upload)
        kind, note = st.session_state.get("upload_note", (None, None))
        if note:
            (b.error if kind == "error" else b.success)(note)
with st.expander("More options", expanded=any(bad in names for names in forms.MORE.values())):
    for section, names in forms.MORE.items():
        st.markdown(f"**{section}**")
        grid(names, error, bad)
if error and bad is None:
    st.error(error, icon=":material/error:")
st.button("Launch", type="primary", icon=":material/rocket_launch:", on_click=launch, key="launch_button")
jobs.standby()          # a worker does its imports while the user fills the form: Launch then skips them
remember_in_url()
