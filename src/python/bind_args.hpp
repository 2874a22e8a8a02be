// Argument structs across the binding by name. ArgsClass<T> exposes a plain C++ struct (a kernel's argument struct)
// to Python as a class whose attributes are the struct's fields under the same names, built from keyword arguments:
//     _C.LowLatencyDispatchArgs(x=x.data_ptr(), num_tokens=t, ...)
// One field table serves the attributes and the keyword constructor, so a name cannot differ between the two. An
// unknown keyword is a TypeError naming it and listing the fields; fields not given keep the struct's defaults.
// Pointer fields are ints in Python (0 = null).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace uccl::ep::python {

namespace py = pybind11;

template <typename T>
class ArgsClass {
 public:
  ArgsClass(py::module_& m, const char* name, const char* doc) : cls_(m, name, doc), table_(std::make_shared<Table>()) {
    table_->class_name = name;
  }

  // An int, bool or size field.
  template <typename V>
  ArgsClass& value(const char* name, V T::*member) {
    cls_.def_readwrite(name, member);
    add(name, [member, n = std::string(name)](T& t, py::handle v) { t.*member = cast<V>(n, v, "an int or bool"); },
        [member](const T& t) { return py::cast(t.*member); });
    return *this;
  }

  // A device or host pointer, an int in Python.
  template <typename P>
  ArgsClass& pointer(const char* name, P* T::*member) {
    auto get = [member](const T& t) { return reinterpret_cast<uintptr_t>(t.*member); };
    auto set = [member](T& t, uintptr_t v) { t.*member = reinterpret_cast<P*>(v); };
    cls_.def_property(name, get, set);
    add(name, [set, n = std::string(name)](T& t, py::handle v) { set(t, cast<uintptr_t>(n, v, "a pointer (int)")); },
        [get](const T& t) { return py::cast(get(t)); });
    return *this;
  }

  // Adds the keyword constructor, fields() and repr once every field is declared.
  py::class_<T>& done() {
    auto table = table_;
    cls_.def(py::init([table](const py::kwargs& kw) {
               T t{};
               for (const auto& [key, value] : kw) {
                 const std::string k = std::string(py::str(key));
                 const auto it = table->set.find(k);
                 if (it == table->set.end()) {
                   throw py::type_error(table->class_name + "() got an unexpected keyword argument '" + k +
                                        "'; fields: " + table->joined());
                 }
                 it->second(t, value);
               }
               return t;
             }),
             ("keywords: " + table->joined()).c_str());
    cls_.def_static("fields", [table] { return table->names; }, "the field names, in declaration order");
    cls_.def("__repr__", [table](const T& t) {
      std::string s = table->class_name + "(";
      for (size_t i = 0; i < table->names.size(); ++i) {
        const std::string& n = table->names[i];
        s += (i ? ", " : "") + n + "=" + std::string(py::repr(table->get.at(n)(t)));
      }
      return s + ")";
    });
    return cls_;
  }

 private:
  struct Table {
    std::string class_name;
    std::vector<std::string> names;
    std::map<std::string, std::function<void(T&, py::handle)>> set;
    std::map<std::string, std::function<py::object(const T&)>> get;
    std::string joined() const {
      std::string s;
      for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
      return s;
    }
  };

  template <typename V>
  static V cast(const std::string& name, py::handle v, const char* expected) {
    try {
      return v.cast<V>();
    } catch (const py::cast_error&) {
      throw py::type_error("argument field '" + name + "' expects " + expected + ", got " +
                           std::string(py::str(py::type::handle_of(v).attr("__name__"))));
    }
  }

  void add(const char* name, std::function<void(T&, py::handle)> set, std::function<py::object(const T&)> get) {
    table_->names.emplace_back(name);
    table_->set.emplace(name, std::move(set));
    table_->get.emplace(name, std::move(get));
  }

  py::class_<T> cls_;
  std::shared_ptr<Table> table_;
};

}  // namespace uccl::ep::python
