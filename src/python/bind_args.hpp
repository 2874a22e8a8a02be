// Argument structs across the binding by name.
//
// Fields<T> is the table of a plain C++ struct's fields under their Python names: it fills a T from keyword
// arguments (a dict), and reads a field back. ArgsClass<T> exposes such a struct (a kernel's argument struct) to
// Python as a class whose attributes are its fields, built from keyword arguments:
//     _C.LowLatencyDispatchArgs(x=x.data_ptr(), num_tokens=t, ...)
// and the runtime's low-latency calls take a struct's fields as keywords of one call (bind_runtime.cpp), or all of
// them by position in declaration order (the hot path: 21 keywords cost more than the launch's other host work). One table
// serves the attributes, the keyword constructor and those calls, so a name cannot differ between them. An unknown
// keyword is a TypeError naming it and listing the fields; a required field left out is a TypeError naming it;
// other fields not given keep the struct's defaults. Pointer fields are ints in Python (0 = null).
//
// Cost: these run on every low-latency call, so a keyword is found by its key object, not by its text. Keyword
// names written in Python source are interned str objects, the same object on every call; after the first lookup
// by text, fill() finds the field by the object's address (the table keeps those key objects alive, so an address
// cannot come back as another string). Keys that are not interned are looked up by text every time.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace uccl::ep::python {

namespace py = pybind11;

template <typename T>
class Fields {
 public:
  using Setter = std::function<void(T&, py::handle)>;
  using Getter = std::function<py::object(const T&)>;

  explicit Fields(std::string struct_name) : struct_name_(std::move(struct_name)) {}

  // An int, bool or size field.
  template <typename V>
  Fields& value(const char* name, V T::*member, bool required = false) {
    const std::string n(name);
    return add(n, [member, n](T& t, py::handle v) { t.*member = cast<V>(n, v, "an int or bool"); },
               [member](const T& t) { return py::cast(t.*member); }, required);
  }

  // A device or host pointer, an int in Python.
  template <typename P>
  Fields& pointer(const char* name, P* T::*member) {
    const std::string n(name);
    return add(
        n, [member, n](T& t, py::handle v) { t.*member = reinterpret_cast<P*>(cast<uintptr_t>(n, v, "a pointer (int)")); },
        [member](const T& t) { return py::cast(reinterpret_cast<uintptr_t>(t.*member)); }, false);
  }

  // The fields of the struct `member` as fields of this one, under their own names.
  template <typename S>
  Fields& nested(S T::*member, const Fields<S>& inner) {
    for (const auto& f : inner.fields_) {
      add(f.name, [member, set = f.set](T& t, py::handle v) { set(t.*member, v); },
          [member, get = f.get](const T& t) { return get(t.*member); }, f.required);
    }
    return *this;
  }

  // Sets the fields `kwargs` (a dict) names. `caller` begins the messages of its TypeErrors.
  void fill(T& t, py::handle kwargs, const std::string& caller) const {
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    Py_ssize_t pos = 0;
    size_t required_seen = 0;
    while (PyDict_Next(kwargs.ptr(), &pos, &key, &value)) {
      const Field& f = fields_[find(key, caller)];
      f.set(t, value);
      required_seen += f.required ? 1 : 0;  // a dict holds each key once
    }
    if (required_seen != num_required_) {
      for (const auto& f : fields_) {
        if (f.required && !PyDict_GetItemString(kwargs.ptr(), f.name.c_str())) {
          throw py::type_error(caller + " missing required keyword argument '" + f.name + "'");
        }
      }
    }
  }

  T make(py::handle kwargs, const std::string& caller) const {
    T t{};
    fill(t, kwargs, caller);
    return t;
  }

  // Every field from `args` (a tuple), in declaration order: no key to look up, for the hot calls. All or nothing:
  // a tuple of another length is a TypeError listing the fields in their order.
  T makePositional(py::handle args, const std::string& caller) const {
    const Py_ssize_t n = PyTuple_GET_SIZE(args.ptr());
    if (static_cast<size_t>(n) != fields_.size()) {
      throw py::type_error(caller + " takes all " + std::to_string(fields_.size()) + " fields by position (" +
                           joined() + ") or by keyword; got " + std::to_string(n) + " positional");
    }
    T t{};
    for (Py_ssize_t i = 0; i < n; ++i) fields_[static_cast<size_t>(i)].set(t, PyTuple_GET_ITEM(args.ptr(), i));
    return t;
  }

  // By position (every field, in order) or by keyword, not both.
  T makeFrom(const py::args& args, const py::kwargs& kwargs, const std::string& caller) const {
    if (args.empty()) return make(kwargs, caller);
    if (!kwargs.empty()) throw py::type_error(caller + ": fields by position or by keyword, not both");
    return makePositional(args, caller);
  }

  const std::string& structName() const { return struct_name_; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& f : fields_) out.push_back(f.name);
    return out;
  }
  std::string joined() const {
    std::string s;
    for (const auto& f : fields_) s += (s.empty() ? "" : ", ") + f.name;
    return s;
  }
  const std::string& name(size_t i) const { return fields_[i].name; }
  py::object get(const T& t, size_t i) const { return fields_[i].get(t); }
  void set(T& t, size_t i, py::handle v) const { fields_[i].set(t, v); }
  size_t size() const { return fields_.size(); }

 private:
  template <typename>
  friend class Fields;

  struct Field {
    std::string name;
    Setter set;
    Getter get;
    bool required;
  };

  Fields& add(const std::string& name, Setter set, Getter get, bool required) {
    if (!by_name_.emplace(name, fields_.size()).second) {
      throw std::logic_error(struct_name_ + ": two fields named '" + name + "'");
    }
    fields_.push_back(Field{name, std::move(set), std::move(get), required});
    num_required_ += required ? 1 : 0;
    return *this;
  }

  // The index of the field `key` names (a str), or TypeError.
  size_t find(PyObject* key, const std::string& caller) const {
    const auto hit = by_key_.find(key);
    if (hit != by_key_.end()) return hit->second;
    if (!PyUnicode_Check(key)) throw py::type_error(caller + ": keywords must be strings");
    const std::string text = py::reinterpret_borrow<py::str>(key);
    const auto it = by_name_.find(text);
    if (it == by_name_.end()) {
      throw py::type_error(caller + " got an unexpected keyword argument '" + text + "'; fields: " + joined());
    }
    // Remember interned keys only (those of Python source), and a bounded number of them.
    if (PyUnicode_CHECK_INTERNED(key) && keys_.size() < 4 * fields_.size()) {
      keys_.push_back(py::reinterpret_borrow<py::object>(key));
      by_key_.emplace(key, it->second);
    }
    return it->second;
  }

  template <typename V>
  static V cast(const std::string& name, py::handle v, const char* expected) {
    try {
      return v.cast<V>();
    } catch (const py::cast_error&) {
      throw py::type_error("argument field '" + name + "' expects " + expected + ", got " +
                           std::string(py::str(py::type::handle_of(v).attr("__name__"))));
    }
  }

  std::string struct_name_;
  std::vector<Field> fields_;
  size_t num_required_ = 0;
  std::unordered_map<std::string, size_t> by_name_;
  // Interned key objects seen so far -> field index; the references in keys_ keep those addresses theirs.
  mutable std::unordered_map<PyObject*, size_t> by_key_;
  mutable std::vector<py::object> keys_;
};

// A Fields table that lives as long as the process: it holds Python objects, which must not be released after the
// interpreter is gone, so it is never destroyed.
template <typename T>
const Fields<T>& leaked(const Fields<T>& f) {
  return *new Fields<T>(f);
}

// The Python class of a struct over its Fields table: attributes, the keyword constructor, fields() and repr.
template <typename T>
void bindArgsClass(py::module_& m, const char* doc, const Fields<T>& fields) {
  const Fields<T>* f = &fields;
  py::class_<T> cls(m, f->structName().c_str(), doc);
  cls.def(py::init([f](const py::args& args, const py::kwargs& kw) { return f->makeFrom(args, kw, f->structName() + "()"); }),
          ("keywords: " + f->joined() + "; or every field by position, in that order").c_str());
  for (size_t i = 0; i < f->size(); ++i) {
    cls.def_property(
        f->name(i).c_str(), [f, i](const T& t) { return f->get(t, i); },
        [f, i](T& t, py::handle v) { f->set(t, i, v); });
  }
  cls.def_static("fields", [f] { return f->names(); }, "the field names, in declaration order");
  cls.def("__repr__", [f](const T& t) {
    std::string s = f->structName() + "(";
    for (size_t i = 0; i < f->size(); ++i) {
      s += (i ? ", " : "") + f->name(i) + "=" + std::string(py::repr(f->get(t, i)));
    }
    return s + ")";
  });
}

}  // namespace uccl::ep::python
