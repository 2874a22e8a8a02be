// Ctrl-C in the native waits (uccl_ep/util/interrupt.hpp) for Python. The check a wait makes takes the GIL briefly
// and runs Python's signal handlers (PyErr_CheckSignals); what a handler raised (KeyboardInterrupt for Ctrl-C) is
// kept aside while uccl::ep::Interrupted unwinds the C++ frames, then becomes the call's exception, with the
// interrupted wait named in a note. wait_interruptibly(seconds) is a native wait that does nothing else, for tests.
#include <chrono>
#include <cmath>
#include <exception>
#include <thread>

#include "python/bind.hpp"
#include "uccl_ep/util/interrupt.hpp"

namespace uccl::ep::python {

namespace {

// What a signal handler raised, on the thread whose wait it interrupted, until the translator raises it.
struct Raised {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* traceback = nullptr;
};
thread_local Raised t_raised;

bool pythonSignalPending() {
  if (!Py_IsInitialized()) return false;
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return false;
  Py_XDECREF(t_raised.type);  // a wait interrupted earlier whose Interrupted some C++ caller swallowed
  Py_XDECREF(t_raised.value);
  Py_XDECREF(t_raised.traceback);
  t_raised = Raised{};
  PyErr_Fetch(&t_raised.type, &t_raised.value, &t_raised.traceback);
  return true;
}

void translate(std::exception_ptr p) {
  try {
    std::rethrow_exception(p);
  } catch (const Interrupted& e) {
    Raised r = t_raised;
    t_raised = Raised{};
    if (r.type == nullptr) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
      return;
    }
    PyErr_NormalizeException(&r.type, &r.value, &r.traceback);
    if (r.traceback != nullptr) PyException_SetTraceback(r.value, r.traceback);
    if (PyObject_HasAttrString(r.value, "add_note")) {  // Python 3.11 and later
      PyObject* done = PyObject_CallMethod(r.value, "add_note", "s", e.what());
      if (done == nullptr) PyErr_Clear();
      Py_XDECREF(done);
    }
    PyErr_Restore(r.type, r.value, r.traceback);
  }
}

}  // namespace

void bindInterrupt(py::module_& m) {
  setInterruptCheck(&pythonSignalPending);
  py::register_exception_translator(&translate);
  m.def(
      "wait_interruptibly",
      [](double seconds) {
        if (!std::isfinite(seconds) || seconds < 0) {
          throw InvalidArgument(fmt::format("wait_interruptibly: seconds must be finite and >= 0, got {}", seconds));
        }
        py::gil_scoped_release nogil;
        const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        InterruptPoll interrupt("wait_interruptibly");
        while (std::chrono::steady_clock::now() < end) {
          interrupt.poll();
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      },
      py::arg("seconds"),
      "waits `seconds` with the GIL released, as every native wait does: Ctrl-C ends it within 0.1 s "
      "(KeyboardInterrupt)");
}

}  // namespace uccl::ep::python
