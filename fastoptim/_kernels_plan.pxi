# The armed-step check of fastoptim.optim (_Plan.is_armed), compiled.  On a small model
# the check that lets a class step be one kernel call is most of the step's own time:
# in Python, reading ~20 objects into a tuple and comparing them cost ~1.2 us per
# step; here it is ~20 lookups and pointer comparisons.  It only reads: identity,
# never equality, so no user object's __eq__ runs; lookups are Python's own (a dict
# subclass's __getitem__ / __missing__ and .get run as they would in Python).

cimport cython
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItemWithError
from cpython.ref cimport PyObject


@cython.final
cdef class LiveCheck:
    """check(groups, state, n_threads): is everything an armed call was made from still
    the live object?  True when ``groups`` is a list holding only ``group``, ``state``
    and ``n_threads`` are the same objects, and these are, in order, the objects of
    ``live``: ``group["params"]``'s items (a list or tuple of ``size``), ``group[key]``
    for the ``required`` keys, ``group.get(key)`` for the ``optional`` ones,
    ``state[i]`` for the ``ids``, then ``state[i][key]`` for each id and each of
    ``keys``.  ``live`` is read at every call: the plan updates it in place (step
    counts), so its length must stay the same.  A failing lookup raises, as Python's."""

    cdef object group, state, n_threads
    cdef Py_ssize_t size
    cdef tuple required, optional, ids, keys
    cdef list live

    def __init__(self, group, state, n_threads, Py_ssize_t size, tuple required,
                 tuple optional, tuple ids, tuple keys, list live):
        if size < 0 or len(live) != size + len(required) + len(optional) + len(ids) * (
                1 + len(keys)):
            raise ValueError("live does not hold one object per param, key and state "
                             "entry")
        self.group, self.state, self.n_threads, self.size = group, state, n_threads, size
        self.required, self.optional, self.ids, self.keys = required, optional, ids, keys
        self.live = live

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def __call__(self, groups, state, n_threads):
        # A lookup can run Python code (a dict subclass's __getitem__, a key's __eq__)
        # that changes the plan's list: read a snapshot of it (a tuple cannot shrink).
        cdef tuple live = tuple(self.live)
        cdef Py_ssize_t k = 0, i, j, n_keys = len(self.keys), first_state
        cdef object group = self.group, params, key
        cdef PyObject* found
        if (type(groups) is not list or len(<list> groups) != 1 or state is not self.state
                or n_threads is not self.n_threads or (<list> groups)[0] is not group):
            return False
        if len(live) != self.size + len(self.required) + len(self.optional) + len(
                self.ids) * (1 + n_keys):  # a plan edited out of shape: never a match
            return False
        params = group["params"]
        if type(params) is list:
            if len(<list> params) != self.size:
                return False
            for i in range(self.size):
                if (<list> params)[i] is not live[k]:
                    return False
                k += 1
        elif type(params) is tuple:
            if len(<tuple> params) != self.size:
                return False
            for i in range(self.size):
                if (<tuple> params)[i] is not live[k]:
                    return False
                k += 1
        else:
            return False
        for key in self.required:
            if group[key] is not live[k]:
                return False
            k += 1
        for key in self.optional:
            if PyDict_CheckExact(group):
                found = PyDict_GetItemWithError(group, key)
                if found == NULL:  # absent (or an error, raised here)
                    if live[k] is not None:
                        return False
                elif <object> found is not live[k]:
                    return False
            elif group.get(key) is not live[k]:
                return False
            k += 1
        first_state = k
        for key in self.ids:
            if state[key] is not live[k]:
                return False
            k += 1
        for i in range(len(self.ids)):
            for j in range(n_keys):
                if live[first_state + i][self.keys[j]] is not live[k]:
                    return False
                k += 1
        return True


@cython.boundscheck(True)  # st[key] = value can run Python code (see LiveCheck)
@cython.wraparound(False)
def count_step(list states, tuple keys, step, tuple scalars, list expected, live,
               Py_ssize_t tail):
    """A bucket's step was applied: each state dict of ``states`` gets ``step`` under
    ``keys[0]`` and ``scalars`` under the keys after it, and the plan's records follow:
    ``expected`` holds ``len(keys)`` entries per state (``keys``' values, in order) and
    ``live`` (a list, or None) the same from index ``tail``."""
    cdef Py_ssize_t n = len(states), stride = len(keys), m = len(scalars), i, j, at
    cdef list live_list = live
    if (m >= stride or len(expected) != n * stride or tail < 0
            or (live is not None and tail + n * stride > len(live_list))):
        raise ValueError("states, keys, scalars, expected and live do not agree")
    for i in range(n):
        st = states[i]
        at = i * stride
        st[keys[0]] = step
        expected[at] = step
        if live is not None:
            live_list[tail + at] = step
        for j in range(m):
            value = scalars[j]
            st[keys[j + 1]] = value
            expected[at + j + 1] = value
            if live is not None:
                live_list[tail + at + j + 1] = value
